"""The learning curve (``training/experiments/learning_curve.py``) on the scripted pool.

The scripted pool (``scripted_pool.py``, L = 2): on ``sum`` items only planner → solver scores, on
``lucky`` items the guesser alone does. So per-task routing has a known answer (planner → solver on
sums, the guesser on lucky items), the best single member is the guesser (right on half the items,
cheapest), and every number below can be recomputed by hand from the recorded tree.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hierrouter_graph import RouterConfig
from hierrouter_graph.members.pool import PoolMember
from tests.training.scripted_pool import chat_models, lucky_items, make_items
from tests.training.test_curves import TopicEncoder
from training.evaluation.learned_routers import KNN, MLP
from training.evaluation.reports import write_marked_section
from training.evaluation.strategies import per_task_routes
from training.experiments.learning_curve import (
    BEST_FIXED,
    BEST_SINGLE,
    HIERROUTER,
    PER_TASK,
    STRATEGIES,
    LearningCurve,
    LearningCurveSettings,
    run_learning_curve,
    stratified_order,
)
from training.experiments.learning_curve_report import SECTION, markdown_section, plot_learning_curve
from training.replay.record import record_outcome_tree
from training.replay.store import ReplayStore
from training.replay.tree import candidate_routes, outcome_tree
from training.rl.args import PPOArgs
from training.tasks.items import Item
from training.tasks.jsonl_datasets import write_jsonl_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN = [*make_items(8, offset=100), *lucky_items(8, offset=100)]
TEST = [*make_items(6), *lucky_items(6)]
TINY_PPO = PPOArgs(iterations=1, rollouts=8, num_minibatches=2, update_epochs=1, hidden_size=16)
RESAMPLES = 200


@pytest.fixture(scope="module")
def store(
    config: RouterConfig, pool: dict[str, PoolMember], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplayStore]:
    with ReplayStore(tmp_path_factory.mktemp("replay") / "replay.sqlite") as replay:
        record_outcome_tree(config, pool, [*TRAIN, *TEST], replay, progress=False)
        yield replay


@pytest.fixture(scope="module")
def curve(
    config: RouterConfig,
    pool: dict[str, PoolMember],
    store: ReplayStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> LearningCurve:
    return run_learning_curve(
        config, pool, TRAIN, TEST, store, TopicEncoder(), sizes=[4, 8, 16, 40], seeds=[1, 2], args=TINY_PPO,
        settings=LearningCurveSettings(resamples=RESAMPLES), run_dir=tmp_path_factory.mktemp("runs"),
        log=lambda _: None,
    )  # fmt: skip


def _tasks(items: list[Item]) -> Counter[str]:
    return Counter(item.task for item in items)


# ------------------------------------------------------------------------------------ subsets


def test_subsets_are_nested_prefixes_stratified_per_task() -> None:
    uneven = [*make_items(12), *lucky_items(6)]  # 2 : 1
    order = stratified_order(uneven, seed=7)
    assert sorted(i.id for i in order) == sorted(i.id for i in uneven)  # every item once
    for k in range(1, 7):
        assert _tasks(order[: 3 * k]) == {"sum": 2 * k, "lucky": k}  # every 3k-prefix: exactly 2 : 1
    assert order == stratified_order(uneven, seed=7)  # a fixed seed
    assert [i.id for i in order] != [i.id for i in stratified_order(uneven, seed=8)]
    sums = [i for i in order if i.task == "sum"]  # within a task: a shuffle, not the input order
    assert [i.id for i in sums] != [i.id for i in make_items(12)]


def test_each_size_trains_and_fits_on_exactly_its_nested_subset(curve: LearningCurve, tmp_path: Path) -> None:
    assert curve.sizes == (4, 8, 16) and curve.skipped == (40,)
    note = "n = 40 skipped: only 16 train items have their whole tree recorded (never padded)"
    assert curve.notes == [note]
    first, second, third = (set(curve.subset(n)) for n in (4, 8, 16))
    assert first < second < third == {i.id for i in TRAIN}
    by_id = {i.id: i for i in TRAIN}
    for n in (4, 8, 16):
        assert _tasks([by_id[i] for i in curve.subset(n)]) == {"sum": n // 2, "lucky": n // 2}
    assert curve.subset(8) == [i.id for i in stratified_order(TRAIN, 0)][:8]
    assert [row.strategy for row in curve.rows if row.size == 4] == list(STRATEGIES)
    assert 40 not in {row.size for row in curve.rows}


def test_ppo_runs_see_only_the_subset_and_the_row_is_the_seed_mean(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    small = run_learning_curve(
        config, pool, TRAIN, TEST, store, TopicEncoder(), sizes=[4], seeds=[3, 4], args=TINY_PPO,
        settings=LearningCurveSettings(resamples=20), run_dir=runs, log=lambda _: None,
    )  # fmt: skip
    for seed in (3, 4):
        marker = runs / "n4-draw0" / f"seed{seed}" / "L2-a0.005" / "train_items.json"
        in_recorded_order = [i.id for i in TRAIN if i.id in set(small.subset(4))]
        assert json.loads(marker.read_text()) == in_recorded_order  # PPO trained on those 4 items only
    row = small.row(4, HIERROUTER)
    assert len(row.seed_rewards) == 2 and row.reward.mean == pytest.approx(np.mean(row.seed_rewards))


# ------------------------------------------------------------------------------------ strategies


def test_per_task_routing_picks_the_hand_computed_route(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, curve: LearningCurve
) -> None:
    train_tree = outcome_tree(config, pool, TRAIN, store)
    subset = [i for i in TRAIN if i.id in set(curve.subset(4))]
    candidates = candidate_routes(config)
    expected = {}
    for task in ("sum", "lucky"):  # by hand: best mean reward, ties → lower mean cost, then order
        mine = [i for i in subset if i.task == task]
        reward = {r: np.mean([train_tree[i.id][r].reward for i in mine]) for r in candidates}
        cost = {r: np.mean([train_tree[i.id][r].cost for i in mine]) for r in candidates}
        expected[task] = min(candidates, key=lambda r: (-reward[r], cost[r], candidates.index(r)))
    assert expected == {"sum": ("planner", "solver"), "lucky": ("guesser",)}
    assert per_task_routes(train_tree, subset, candidates) == expected
    row = curve.row(4, PER_TASK)
    assert row.routes == "lucky: guesser; sum: planner → solver"  # tasks outside ALL_TASKS: sorted
    test_tree = outcome_tree(config, pool, TEST, store)
    assert row.reward.mean == pytest.approx(np.mean([test_tree[i.id][expected[i.task]].reward for i in TEST]))
    assert row.task_metric == 1.0  # right on every test item
    assert curve.row(4, BEST_SINGLE).routes == "guesser" and curve.row(4, BEST_SINGLE).task_metric == 0.5
    assert curve.row(4, BEST_FIXED).routes == "guesser"  # planner → solver: same Q, dearer


def test_delta_and_intervals_are_the_hand_computed_paired_bootstrap(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, curve: LearningCurve
) -> None:
    test_tree = outcome_tree(config, pool, TEST, store)
    per_task = np.array([test_tree[i.id][("planner", "solver") if i.task == "sum" else ("guesser",)].reward
                         for i in TEST])  # fmt: skip
    single = np.array([test_tree[i.id][("guesser",)].reward for i in TEST])
    index = np.random.default_rng(0).integers(0, len(TEST), size=(RESAMPLES, len(TEST)))
    diff = per_task - single
    low, high = np.percentile(diff[index].mean(axis=1), [2.5, 97.5])
    row = curve.row(8, PER_TASK)
    assert (row.delta.mean, row.delta.low, row.delta.high) == pytest.approx((diff.mean(), low, high))
    low, high = np.percentile(per_task[index].mean(axis=1), [2.5, 97.5])
    assert (row.reward.mean, row.reward.low, row.reward.high) == pytest.approx((per_task.mean(), low, high))
    assert row.delta.low > 0  # planner → solver on sums: a lead beyond the interval
    best = curve.row(8, BEST_SINGLE).delta
    assert (best.mean, best.low, best.high) == (0.0, 0.0, 0.0)
    for name in (KNN, MLP):  # the topic encoder tells the tasks apart: both find the per-task routes
        assert curve.row(16, name).reward.mean == pytest.approx(per_task.mean()), name


def test_draws_average_per_query_over_their_own_subsets(
    config: RouterConfig,
    pool: dict[str, PoolMember],
    store: ReplayStore,
    curve: LearningCurve,
    tmp_path: Path,
) -> None:
    drawn = run_learning_curve(
        config, pool, TRAIN, TEST, store, TopicEncoder(), sizes=[2, 16], settings=LearningCurveSettings(
            draws=3, subset_seed=5, resamples=20), run_dir=tmp_path, log=lambda _: None,
    )  # fmt: skip
    assert len(drawn.orders) == 3 and drawn.orders[0] == [i.id for i in stratified_order(TRAIN, 5)]
    assert drawn.orders[1] == [i.id for i in stratified_order(TRAIN, 6)]
    assert not drawn.seeds and HIERROUTER not in {row.strategy for row in drawn.rows}
    test_tree = outcome_tree(config, pool, TEST, store)
    # n = 2: one item per task, so per-task routing is right on every draw; the mean is exact
    per_task = np.mean([test_tree[i.id][("planner", "solver") if i.task == "sum" else ("guesser",)].reward
                        for i in TEST])  # fmt: skip
    assert drawn.row(2, PER_TASK).reward.mean == pytest.approx(per_task)
    for name in (KNN, MLP, PER_TASK, BEST_FIXED, BEST_SINGLE):  # n = every item: the order never matters
        assert drawn.row(16, name).reward.mean == pytest.approx(curve.row(16, name).reward.mean), name


def test_no_size_within_the_recorded_items_is_an_error_naming_the_count(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"every size \[24, 48\] is above the 16 recorded train items"):
        run_learning_curve(config, pool, TRAIN, TEST, store, TopicEncoder(), sizes=[24, 48], run_dir=tmp_path)
    with pytest.raises(ValueError, match="draws must be >= 1, got 0"):
        LearningCurveSettings(draws=0)


# ------------------------------------------------------------------------------------ outputs


def test_json_round_trips(curve: LearningCurve, tmp_path: Path) -> None:
    curve.info = {"command": "CMD"}
    path = curve.write(tmp_path / "out" / "learning_curve.json")
    assert LearningCurve.read(path) == curve
    assert not [p for p in path.parent.iterdir() if p.name != "learning_curve.json"]  # no temp left
    (tmp_path / "bad.json").write_text('{"sizes": [4]}')
    with pytest.raises(ValueError, match=r"bad\.json: not a learning_curve\.json"):
        LearningCurve.read(tmp_path / "bad.json")


def test_section_is_written_between_its_markers_and_leaves_others_alone(
    curve: LearningCurve, tmp_path: Path
) -> None:
    report = tmp_path / "docs" / "results.md"
    report.parent.mkdir()
    other = "<!-- curves:begin -->\nCURVES TABLE\n<!-- curves:end -->\n"
    report.write_text(f"# Results\n\nhand-written text\n\n{other}")
    for command in ("CMD ONE", "CMD TWO"):  # a rerun replaces only its own block
        section = markdown_section(curve, command, tmp_path / "docs" / "lc.png", report)
        write_marked_section(report, SECTION, section)
    text = report.read_text()
    assert text.startswith(f"# Results\n\nhand-written text\n\n{other}")
    assert text.count(f"<!-- {SECTION}:begin -->") == 1 and text.endswith(f"<!-- {SECTION}:end -->\n")
    assert "    CMD TWO" in text and "CMD ONE" not in text
    row = curve.row(8, PER_TASK)
    assert f"| 8 | {PER_TASK} | {row.reward.mean:.4f} [" in text
    assert "![test reward vs training items](lc.png)" in text
    assert f"| 4 | **{HIERROUTER}** |" in text and "Note: n = 40 skipped" in text
    png = plot_learning_curve(curve, tmp_path / "docs" / "lc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_end_to_end_on_tiny_data(config: RouterConfig, store: ReplayStore, tmp_path: Path) -> None:
    from training.cli.learning_curve import main

    config.to_file(tmp_path / "router.yaml")
    write_jsonl_dataset(TEST, tmp_path / "test.jsonl")
    write_jsonl_dataset(TRAIN, tmp_path / "train.jsonl")
    out = tmp_path / "out"
    argv = [
        "--config", str(tmp_path / "router.yaml"), "--items", str(tmp_path / "test.jsonl"),
        "--train-items", str(tmp_path / "train.jsonl"), "--replay", str(store.path),
        "--sizes", "4", "16", "40", "--seeds", "1", "--draws", "2", "--resamples", "50",
        "--iterations", "1", "--rollouts", "8", "--minibatches", "2", "--epochs", "1", "--hidden-size", "16",
        "--out-dir", str(out), "--report", str(tmp_path / "results.md"), "--plot", str(tmp_path / "lc.png"),
        "--no-progress",
    ]  # fmt: skip
    assert main(argv, chat_models=chat_models(), encoder=TopicEncoder()) == 0
    curve = LearningCurve.read(out / "learning_curve.json")
    assert curve.sizes == (4, 16) and curve.skipped == (40,) and curve.seeds == (1,)
    assert curve.settings == LearningCurveSettings(draws=2, resamples=50) and len(curve.orders) == 2
    assert curve.info["ppo"]["iterations"] == 1 and curve.info["ppo"]["hidden_size"] == 16
    assert (out / "runs" / "n16-draw1" / "seed1" / "L2-a0.005" / "policy" / "policy.json").is_file()
    text = (tmp_path / "results.md").read_text()
    assert f"<!-- {SECTION}:begin -->" in text and "python training/learning_curve.py --config" in text
    assert (tmp_path / "lc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_strategies_are_scored_with_the_reward_metric_ppo_is_given(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, tmp_path: Path
) -> None:
    by_f1 = run_learning_curve(
        config, pool, TRAIN, TEST, store, TopicEncoder(), sizes=[16], args=PPOArgs(reward="f1"),
        settings=LearningCurveSettings(resamples=20), run_dir=tmp_path, log=lambda _: None,
    )  # fmt: skip
    train_tree = outcome_tree(config, pool, TRAIN, store, reward_metric="f1")
    test_tree = outcome_tree(config, pool, TEST, store, reward_metric="f1")
    routes = per_task_routes(train_tree, TRAIN, candidate_routes(config))
    expected = np.mean([test_tree[i.id][routes[i.task]].reward for i in TEST])
    assert by_f1.row(16, PER_TASK).reward.mean == pytest.approx(expected)
