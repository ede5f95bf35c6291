"""The pool check (``training/pool_check.py``) on the scripted pool, whose best routes are known:
sums need planner → solver (two hops), lucky questions only the guesser's 13 answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hierrouter_graph import RouterConfig
from hierrouter_graph.members.pool import PoolMember
from tests.training.scripted_pool import chat_models, lucky_items, make_items
from training.experiments.pool_check import PoolCheck, check_pool
from training.experiments.pool_check_report import markdown
from training.replay.readers import ReplayMissError
from training.replay.record import record_outcome_tree
from training.replay.store import ReplayStore
from training.replay.tree import outcome_tree, with_horizon
from training.tasks.jsonl_datasets import write_jsonl_dataset

SUMS = make_items(6)
LUCKY = lucky_items(4)
STAGE0_ONLY = make_items(3, offset=50)
"""Items whose stage-0 replies alone are recorded: in the horizon-1 check, not in the L=2 one."""


@pytest.fixture(scope="module")
def store(
    config: RouterConfig, pool: dict[str, PoolMember], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplayStore]:
    with ReplayStore(tmp_path_factory.mktemp("replay") / "replay.sqlite") as replay:
        record_outcome_tree(config, pool, [*SUMS, *LUCKY], replay, progress=False)
        record_outcome_tree(with_horizon(config, 1), pool, STAGE0_ONLY, replay, progress=False)
        yield replay


def _check(config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, **kw: object) -> PoolCheck:
    return check_pool(config, pool, [*SUMS, *LUCKY, *STAGE0_ONLY], store, resamples=200, **kw)  # type: ignore[arg-type]


def test_full_horizon_finds_each_tasks_route_and_the_hand_computed_gain(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore
) -> None:
    check = _check(config, pool, store)
    assert check.horizon == 2 and check.items == 10 and check.items_requested == 13
    assert check.per_task == {"sum": 6, "lucky": 4}
    assert check.task_routes == {"sum": "planner → solver", "lucky": "guesser"}
    assert check.best_single == "guesser (1 call)"
    tree = outcome_tree(config, pool, [*SUMS, *LUCKY], store)
    oracle = [tree[i.id][("planner", "solver")].reward for i in SUMS] + [
        tree[i.id][("guesser",)].reward for i in LUCKY
    ]
    single = [tree[i.id][("guesser",)].reward for i in [*SUMS, *LUCKY]]
    assert check.gain.mean == pytest.approx(float(np.mean(oracle) - np.mean(single)))
    assert check.gain.mean == pytest.approx(0.6, abs=0.01)  # the 6 sums of 10 gained, minus their α·C
    assert (
        0.25 < check.gain.low < check.gain.mean < check.gain.high
        and check.oracle_reward.mean >= check.task_oracle_reward.mean
    )
    # every item's task has other items choosing the same route: leave-one-out agrees here
    assert check.loo_task_reward.mean == pytest.approx(check.task_oracle_reward.mean)
    assert check.loo_gain.mean == pytest.approx(check.gain.mean)
    solver = next(row for row in check.routes if row.route == "planner → solver")
    assert solver.quality == {"sum": 1.0, "lucky": 0.0} and solver.overall_quality == 0.6


def test_leave_one_out_does_not_credit_a_route_seen_only_on_the_item_itself(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore
) -> None:
    check = check_pool(config, pool, [*LUCKY, SUMS[0]], store, resamples=50)
    assert check.task_oracle_reward.mean == pytest.approx(1.0, abs=0.02)  # in-sample: 5 of 5 right
    assert check.gain.mean == pytest.approx(0.2, abs=0.02)  # the guesser alone gets the 4 lucky ones
    # held out, the lone sum gets the route chosen on the lucky items (the guesser's wrong 13)
    assert check.loo_task_reward.mean == pytest.approx(0.8, abs=0.02)
    assert check.loo_gain.mean == pytest.approx(0.0, abs=0.01)
    assert check.loo_gain.mean < check.gain.mean


def test_cost_range_is_dearest_over_cheapest_one_call_and_gates_the_verdict(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore
) -> None:
    check = _check(config, pool, store)
    costs = check.member_costs
    assert check.cost_range == pytest.approx(max(costs.values()) / min(costs.values()))
    assert 1 < check.cost_range < 20 and not check.passes  # gain enough, range too narrow
    assert _check(config, pool, store, min_cost_range=check.cost_range).passes
    assert not _check(config, pool, store, min_cost_range=1.0, min_gain=0.7).passes


def test_horizon_one_uses_stage0_replies_only(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore
) -> None:
    check = _check(config, pool, store, horizon=1)
    assert check.horizon == 1 and check.items == 13  # the stage-0-only items count here
    assert [row.route for row in check.routes] == ["planner", "solver", "guesser"]
    assert check.best_single == "guesser (1 call)"
    assert check.gain.mean < 0.01  # one hop never solves a sum: no member is better on any task


def test_nothing_recorded_is_a_replay_miss_naming_the_command(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore
) -> None:
    with pytest.raises(
        ReplayMissError, match=r"none of the 2 items.*training/record.py --split train --horizon 2"
    ):
        check_pool(config, pool, make_items(2, offset=900), store)


def test_markdown_shows_routes_gain_and_verdict(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore
) -> None:
    text = markdown(_check(config, pool, store), "python training/pool_check.py --horizon 2")
    assert text.startswith("```\npython training/pool_check.py --horizon 2\n```")
    assert "| planner → solver | 1.000 | 0.000 | 0.600 |" in text
    assert "criterion ≥ 0.08: passes" in text and "criterion ≥ 20×: **fails**" in text
    assert "Verdict: the pool **fails**" in text


def test_cli_exit_status_json_and_report(config: RouterConfig, store: ReplayStore, tmp_path: Path) -> None:
    from training.cli.pool_check import main

    config.to_file(tmp_path / "router.yaml")
    write_jsonl_dataset([*SUMS, *LUCKY], tmp_path / "train.jsonl")
    argv = [
        "--config", str(tmp_path / "router.yaml"), "--items", str(tmp_path / "train.jsonl"),
        "--replay", str(store.path), "--resamples", "50", "--out", str(tmp_path / "check.json"),
        "--report", str(tmp_path / "pools.md"),
    ]  # fmt: skip
    assert main(argv, chat_models=chat_models()) == 1  # fails the 20× cost range
    assert main([*argv, "--min-cost-range", "1"], chat_models=chat_models()) == 0
    saved = json.loads((tmp_path / "check.json").read_text())
    assert saved["passes"] is True and saved["items"] == 10 and "--min-cost-range 1" in saved["command"]
    assert "<!-- pool-check:begin -->" in (tmp_path / "pools.md").read_text()
