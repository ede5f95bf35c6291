"""training/tune.py: a held-out split of the train items chooses PPO's lr and length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hierrouter_graph.graph import build_pool
from hierrouter_graph.policy.dynamic import load_saved_policy
from hierrouter_graph.policy.encoder import TextEncoder
from tests.training.scripted_pool import chat_models, make_items, scripted_config
from training.evaluation.strategies import best_route, router_routes
from training.experiments.tune import split_validation, tune
from training.replay.readers import CachedEncoder
from training.replay.record import record_outcome_tree
from training.replay.store import ReplayStore
from training.replay.tree import candidate_routes, outcome_tree
from training.rl.args import PPOArgs
from training.tasks.items import Item


def _tasks(n_per_task: int) -> list[Item]:
    return [
        Item(f"{task}/{i}", task, f"{task} {i}", ["x"], "token_f1", "routing")
        for task in ("a", "b", "c")
        for i in range(n_per_task)
    ]


def test_validation_split_is_per_task_disjoint_and_reproducible() -> None:
    items = [*_tasks(8), Item("lone/0", "lone", "only one", ["x"], "token_f1", "routing")]
    fit, val = split_validation(items, 0.25, seed=0)
    assert {i.id for i in fit}.isdisjoint(i.id for i in val)
    assert len(fit) + len(val) == len(items)
    assert sorted(i.task for i in val) == ["a", "a", "b", "b", "c", "c"]  # 25% of 8 per task
    assert "lone/0" in {i.id for i in fit}  # a task of one item is never held out entirely
    assert split_validation(list(reversed(items)), 0.25, seed=0)[1] == [
        i for i in reversed(items) if i in val
    ]
    assert split_validation(items, 0.25, seed=1)[1] != val
    for share in (0.0, 1.0):
        with pytest.raises(ValueError, match="val_share must be in"):
            split_validation(items, share, seed=0)


def test_every_grid_point_is_trained_on_fit_items_and_scored_on_held_out_ones(
    encoder: TextEncoder, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    config = scripted_config().model_copy(update={"alpha": 0.01})
    pool = build_pool(config, chat_models())
    items = make_items(8, offset=0)
    log: list[str] = []
    with ReplayStore(tmp_path / "replay.sqlite") as store:
        record_outcome_tree(config, pool, items, store, progress=False)
        base = PPOArgs(iterations=1, rollouts=8, num_minibatches=2, update_epochs=1)
        result = tune(
            config, pool, items, store, encoder, tmp_path / "tune",
            lrs=(1e-4, 3e-2), iterations=(1, 2), base=base, log=log.append,
        )  # fmt: skip
        fit, val = split_validation(items, 0.25, 0)
        assert (result.fit_items, result.val_items) == (len(fit), len(val)) == (6, 2)
        assert result.best_fixed_route == "planner → solver"  # the only right route, chosen on fit
        tree = outcome_tree(config, pool, val, store)
        fixed = best_route(tree, val, candidate_routes(config))
        assert result.best_fixed_val_reward == pytest.approx(np.mean([tree[i.id][fixed].reward for i in val]))
        # one task ("sum"): its best route on fit is the best fixed route
        assert result.per_task_val_reward == pytest.approx(result.best_fixed_val_reward)
        assert [(g.learning_rate, g.iterations) for g in result.grid] == [
            (1e-4, 1),
            (1e-4, 2),
            (3e-2, 1),
            (3e-2, 2),
        ]
        assert result.best == max(result.grid, key=lambda g: g.val_reward)
        for point in result.grid:  # each score is its saved policy's greedy routes on the held-out tree
            folder = tmp_path / "tune" / f"lr{point.learning_rate:g}-it{point.iterations}-seed42" / "policy"
            policy = load_saved_policy(folder, config, CachedEncoder(encoder, store))
            routes = router_routes(policy, config, tree, val)
            assert point.per_seed_reward == (
                pytest.approx(np.mean([tree[i.id][r].reward for i, r in zip(val, routes, strict=True)])),
            )
            assert sum(point.routes.values()) == len(val)
    assert log[0].startswith("fit on 6 items, validate on 2; best fixed route on fit: planner → solver")
    assert len(log) == 1 + len(result.grid)


def test_cli_defaults_are_the_documented_grid() -> None:
    from training.cli.tune import parse_args

    assert parse_args([]).lrs == [1e-4, 3e-4, 1e-3]
    assert parse_args(["--iterations", "16"]).iterations == [16]


def test_markdown_section_marks_the_choice_and_names_both_commands() -> None:
    from training.experiments.tune import GridResult, TuneResult, markdown_section

    grid = [
        GridResult(1e-4, 8, 0.10, 0.10, (0.10,), {"a → b": 3}),
        GridResult(1e-3, 32, 0.25, 0.25, (0.25,), {"a → a": 2, "b → b": 1}),
    ]
    result = TuneResult(9, 3, "a → a", 0.2, grid)
    text = markdown_section(
        result, "python training/tune.py", "python training/ppo.py --lr 0.001 --iterations 32"
    )
    assert "| 0.001 | 32 **(chosen)** | 0.2500 | 0.250 | `a → a` 2, `b → b` 1 |" in text
    assert "| 0.0001 | 8 | 0.1000 | 0.100 | `a → b` 3 |" in text
    assert "`a → a`, scores 0.2000 on the held-out items" in text
    assert "9 recorded train items to fit, 3 held out" in text
    assert "`python training/ppo.py --lr 0.001 --iterations 32`" in text
    assert "scores 0.2000 on the held-out items." in text  # no per-task reference given
    with_per_task = markdown_section(TuneResult(9, 3, "a → a", 0.2, grid, 0.3), "t", "p")
    assert "scores 0.2000 on the held-out items; per-task routing chosen on them" in with_per_task
    assert "(each task's best route) scores 0.3000." in with_per_task
