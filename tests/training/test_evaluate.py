"""Evaluation on a scripted pool whose outcome tree is known by construction.

The pool (L = 2): ``planner`` writes a plan (no number); ``solver`` answers a sum correctly once a
plan or an earlier answer is in its prompt, else says 0; ``guesser`` always says 13. Two tasks,
both scored by ``gsm8k_number``:

- ``sum`` ("What is a plus b?"): only routes ending in ``solver`` after a first hop score 1 — so
  no single call does, ``solver ×2`` is the best single, and the cheapest scoring route
  (``guesser → solver``) is the oracle.
- ``lucky`` (the answer is 13): ``guesser`` in one call already scores 1 and is the cheapest route,
  so the oracle equals the best single there and the gap share is undefined.

The train split is mostly ``sum``, the test split is balanced: the best fixed route chosen on
train (``guesser → solver``) differs from the one hindsight on test would pick (``guesser``).
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hierrouter_graph import RouterConfig
from hierrouter_graph.graph import HierRouterGraph, build_pool
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.policy.encoder import TextEncoder
from hierrouter_graph.policy.protocol import FixedRoutePolicy
from hierrouter_graph.policy.router import RouterPolicy
from tests.training.scripted_pool import (
    POOL,
    RATES,
    ScriptedChat,
    lucky_items,
    make_items,
)
from tests.training.scripted_pool import chat_models as scripted_chat_models
from tests.training.scripted_pool import reply as shared_reply
from training.cli.evaluate import main, parse_args, run_from_cli
from training.evaluation.curves import alpha_points
from training.evaluation.evaluate import EvaluationResult, evaluate
from training.evaluation.reports import NO_SWEEP, plot_cost_quality, print_table, write_report
from training.evaluation.statistics import aiq, bootstrap_interval
from training.evaluation.strategies import ORACLE, PER_TASK, RANDOM, ROUTER, TASK_ORACLE, best_route
from training.replay.readers import ReplayMissError
from training.replay.record import record_outcome_tree
from training.replay.store import ReplayStore
from training.replay.tree import OutcomeTree, candidate_routes, outcome_tree
from training.tasks.items import Item
from training.tasks.jsonl_datasets import write_jsonl_dataset
from training.tasks.reward import ScoreMemo

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reply(role: str, prompt: str) -> str:
    return shared_reply(role, prompt, solves_after_answer=True)


def chat_models() -> dict[str, ScriptedChat]:
    """The shared scripted pool, except that the solver also adds after another solver."""
    return scripted_chat_models(solves_after_answer=True)


TRAIN = [*make_items(6, offset=100), *lucky_items(2, offset=100)]
TEST = [*make_items(4), *lucky_items(4)]


@pytest.fixture(scope="module")
def pool(config: RouterConfig) -> dict[str, PoolMember]:
    return build_pool(config, chat_models())


@pytest.fixture(scope="module")
def store(config: RouterConfig, pool: dict[str, PoolMember], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Both outcome trees recorded once, exactly as ``training/record.py`` records them."""
    with ReplayStore(tmp_path_factory.mktemp("replay") / "replay.sqlite") as replay:
        record_outcome_tree(config, pool, [*TRAIN, *TEST], replay, progress=False)
        yield replay


@pytest.fixture(scope="module")
def test_tree(config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore) -> OutcomeTree:
    return outcome_tree(config, pool, TEST, store)


@pytest.fixture(scope="module")
def baseline(config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore) -> EvaluationResult:
    router = FixedRoutePolicy(POOL, ["guesser", "solver"])
    return evaluate(config, pool, router, TRAIN, TEST, store, "task", None, 0)


def _mean_over_test(tree: OutcomeTree, route: tuple[str, ...], field: str, items: list[Item] = TEST) -> float:
    return float(np.mean([getattr(tree[item.id][route], field) for item in items]))


# ------------------------------------------------------------------------------------ outcome tree


def test_tree_holds_every_route_of_length_1_to_L(test_tree: OutcomeTree, config: RouterConfig) -> None:
    assert len(candidate_routes(config)) == 3 + 9
    for item in TEST:
        assert set(test_tree[item.id]) == set(candidate_routes(config))
        node = test_tree[item.id][("guesser", "solver")]
        assert node.context == f"{item.prompt}\n\nThe answer is 13.\n\n{reply('solver', node.context)}"
        assert node.cost == pytest.approx(test_tree[item.id][("guesser",)].cost + RATES["solver"] * (
            len(f"{config.stage_prompt(1)}\n\n{item.prompt}\n\nThe answer is 13.".split()) + 4))  # fmt: skip
    sums = [i for i in TEST if i.task == "sum"]
    assert {r for r in candidate_routes(config) if test_tree[sums[0].id][r].task_metric == 1.0} == {
        ("planner", "solver"), ("solver", "solver"), ("guesser", "solver")
    }  # fmt: skip


def test_replay_only_miss_names_record_py_and_live_fills_the_store(
    config: RouterConfig, pool: dict[str, PoolMember], tmp_path: Path
) -> None:
    with ReplayStore(tmp_path / "empty.sqlite") as empty:
        with pytest.raises(ReplayMissError, match="training/record.py"):
            outcome_tree(config, pool, TEST[:1], empty)
        live = outcome_tree(config, pool, TEST[:1], empty, live=True)
        assert len(empty) == 3 + 9
        assert outcome_tree(config, pool, TEST[:1], empty) == live  # now pure replay
    with pytest.raises(ValueError, match="cache"):
        outcome_tree(config, pool, TEST[:1], None)


def test_an_incomplete_record_is_evaluated_on_its_complete_test_items_and_says_so(
    config: RouterConfig, pool: dict[str, PoolMember], tmp_path: Path
) -> None:
    recorded = [TEST[0], TEST[5]]  # a sum item and a lucky item
    with ReplayStore(tmp_path / "partial.sqlite") as partial:
        record_outcome_tree(config, pool, [*TRAIN, *recorded], partial, progress=False)
        router = FixedRoutePolicy(POOL, ["guesser", "solver"])
        result = evaluate(config, pool, router, TRAIN, TEST, partial, "task", None, 0)
        assert result.item_ids == [item.id for item in recorded]
        assert f"evaluated on the 2 of {len(TEST)} test items whose outcome tree is recorded" in " ".join(
            result.notes
        )
        console = io.StringIO()
        print_table(result, console)  # what ppo.py and make demo print says so too
        assert f"note: evaluated on the 2 of {len(TEST)} test items" in console.getvalue()
        full = evaluate(config, pool, router, TRAIN, recorded, partial, "task", None, 0)
        assert full.overall == result.overall and not any("of 2 test items" in n for n in full.notes)
    with ReplayStore(tmp_path / "train-only.sqlite") as train_only:
        record_outcome_tree(config, pool, TRAIN, train_only, progress=False)
        with pytest.raises(ReplayMissError, match=f"none of the {len(TEST)} test items.*training/record.py"):
            evaluate(config, pool, router, TRAIN, TEST, train_only, "task", None, 0)
    with ReplayStore(tmp_path / "some-train.sqlite") as some_train:  # the header counts what was used
        record_outcome_tree(config, pool, [*TRAIN[:3], *TEST], some_train, progress=False)
        fewer = evaluate(config, pool, router, TRAIN, TEST, some_train, "task", None, 0)
        assert fewer.n_train == 3 and sum(train for train, _ in fewer.counts.values()) == 3


def test_scores_are_memoised_per_item_and_replies(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore
) -> None:
    memo = ScoreMemo()
    first = outcome_tree(config, pool, TEST, store, memo=memo)
    scored, hits = len(memo), memo.hits
    assert scored + hits == len(TEST) * 12  # routes ending in the same answer share one score
    assert outcome_tree(config, pool, TEST, store, memo=memo) == first
    assert len(memo) == scored and memo.hits - hits == len(TEST) * 12


# ------------------------------------------------------------------------------------ strategies


def test_single_model_rows_are_exact(baseline: EvaluationResult, config: RouterConfig) -> None:
    lucky = baseline.groups["lucky"]
    one_call = lucky.row("guesser (1 call)")
    costs = [
        RATES["guesser"] * (len(f"{config.stage_prompt(0)}\n\n{item.prompt}".split()) + 4)
        for item in TEST
        if item.task == "lucky"
    ]
    assert one_call.task_metric.mean == 1.0 and one_call.f1.mean == 0.5  # "answer is 13" vs "13"
    assert one_call.cost.mean == pytest.approx(np.mean(costs), rel=1e-12)
    assert one_call.reward.mean == pytest.approx(1.0 - 0.005 * np.mean(costs), rel=1e-12)
    assert lucky.best_single == "guesser (1 call)"
    assert baseline.groups["sum"].best_single == "solver (×2)"
    assert baseline.groups["sum"].row("solver (×2)").task_metric.mean == 1.0
    assert baseline.groups["sum"].row("solver (1 call)").task_metric.mean == 0.0
    assert [r.name for r in baseline.overall.rows if r.kind == "single"] == [
        f"{m} ({k})" for m in POOL for k in ("1 call", "×2")
    ]


def test_random_is_the_exact_mean_over_all_length_L_routes(
    baseline: EvaluationResult, test_tree: OutcomeTree
) -> None:
    routes = list(itertools.product(POOL, repeat=2))
    for field in ("reward", "cost", "task_metric", "f1"):
        expected = np.mean([np.mean([getattr(test_tree[i.id][r], field) for r in routes]) for i in TEST])
        assert getattr(baseline.overall.row(RANDOM), field).mean == pytest.approx(expected, rel=1e-12)


def test_oracle_dominates_every_strategy_on_every_query(baseline: EvaluationResult) -> None:
    oracle = baseline.strategies[ORACLE].scores.reward
    for name, strategy in baseline.strategies.items():
        assert np.all(strategy.scores.reward <= oracle + 1e-12), name
    sums = [i for i, item in enumerate(TEST) if item.task == "sum"]
    assert {baseline.strategies[ORACLE].routes[i] for i in sums} == {("guesser", "solver")}
    assert {baseline.strategies[ORACLE].routes[i] for i in range(len(TEST)) if i not in sums} == {
        ("guesser",)
    }


def test_task_oracle_is_each_tasks_best_fixed_route(
    baseline: EvaluationResult, test_tree: OutcomeTree, config: RouterConfig
) -> None:
    for task in ("sum", "lucky"):
        items = [i for i in TEST if i.task == task]
        row = baseline.groups[task].row(TASK_ORACLE)
        best = max(_mean_over_test(test_tree, r, "reward", items) for r in candidate_routes(config))
        assert row.reward.mean == pytest.approx(best, rel=1e-12)
        assert row.description == " → ".join(best_route(test_tree, items, candidate_routes(config)))
    assert baseline.groups["lucky"].row(TASK_ORACLE).description == "guesser"


def test_per_task_routing_takes_each_tasks_best_route_on_train(
    baseline: EvaluationResult, test_tree: OutcomeTree, config: RouterConfig, pool: dict[str, PoolMember],
    store: ReplayStore,
) -> None:  # fmt: skip
    train_tree = outcome_tree(config, pool, TRAIN, store)
    chosen = {
        task: best_route(train_tree, [i for i in TRAIN if i.task == task], candidate_routes(config))
        for task in ("sum", "lucky")
    }
    assert chosen == {"sum": ("guesser", "solver"), "lucky": ("guesser",)}
    row = baseline.overall.row(PER_TASK)
    assert row.description == "lucky: guesser; sum: guesser → solver"  # tasks outside ALL_TASKS: sorted
    expected = np.mean([test_tree[item.id][chosen[item.task]].reward for item in TEST])
    assert row.reward.mean == pytest.approx(expected, rel=1e-12)
    assert baseline.strategies[PER_TASK].routes == tuple(chosen[item.task] for item in TEST)
    hindsight = evaluate(config, pool, None, [], TEST, store)  # no train tree: left out, said so
    assert PER_TASK not in hindsight.strategies
    assert any(note.startswith(f"{PER_TASK} left out") for note in hindsight.notes)
    only_sums = evaluate(config, pool, None, TRAIN[:6], TEST, store)  # no lucky train item
    assert only_sums.strategies[PER_TASK].routes == tuple(
        ("guesser", "solver") if item.task == "sum" else only_sums.best_fixed_route for item in TEST
    )
    assert any("no train items of lucky" in note for note in only_sums.notes)


def test_best_fixed_route_is_chosen_on_train_else_hindsight(
    baseline: EvaluationResult, config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore
) -> None:
    train_tree = outcome_tree(config, pool, TRAIN, store)
    assert baseline.best_fixed_route == best_route(train_tree, TRAIN, candidate_routes(config))
    assert baseline.best_fixed_route == ("guesser", "solver") and baseline.best_fixed_source == "train"
    assert baseline.overall.row("best fixed route (train)").description == "guesser → solver"
    hindsight = evaluate(config, pool, None, [], TEST, store)
    assert hindsight.best_fixed_source == "hindsight" and hindsight.best_fixed_route == ("guesser",)
    assert any("hindsight" in note for note in hindsight.notes)
    assert ROUTER not in hindsight.strategies
    with pytest.raises(ValueError, match="both train and test"):
        evaluate(config, pool, None, TEST[:1], TEST, store)


def test_fixed_route_router_equals_that_routes_row(baseline: EvaluationResult) -> None:
    for group in baseline.groups.values():
        router, fixed = group.row(ROUTER), group.row("best fixed route (train)")
        assert (router.task_metric, router.f1, router.cost, router.reward, router.gap) == (
            fixed.task_metric, fixed.f1, fixed.cost, fixed.reward, fixed.gap
        )  # fmt: skip
    assert baseline.overall.router_routes == {"guesser → solver": len(TEST)}


def test_gap_share_is_1_at_the_oracle_0_at_best_single_and_undefined_without_a_gap(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore
) -> None:
    at_oracle = evaluate(config, pool, FixedRoutePolicy(POOL, ["guesser", "solver"]), TRAIN, TEST, store)
    gap = at_oracle.groups["sum"].row(ROUTER).gap
    assert (gap.mean, gap.low, gap.high) == (1.0, 1.0, 1.0)
    assert not at_oracle.groups["sum"].row(ROUTER).inside_noise  # clearly better than solver ×2
    assert not at_oracle.groups["lucky"].row(ROUTER).gap.defined  # oracle == best single there
    assert at_oracle.groups["sum"].row(ORACLE).gap.mean == 1.0

    at_best = evaluate(config, pool, FixedRoutePolicy(POOL, ["solver", "solver"]), TRAIN, TEST, store)
    row = at_best.groups["sum"].row(ROUTER)
    assert row.gap.mean == 0.0 and row.inside_noise
    assert row.vs_best_single is not None and (row.vs_best_single.low, row.vs_best_single.high) == (0.0, 0.0)
    assert at_best.groups["sum"].row("solver (×2)").vs_best_single is None


def test_bootstrap_interval_contains_the_mean_and_is_seeded() -> None:
    values = np.random.default_rng(5).random(40)
    first = bootstrap_interval(values, resamples=1000, seed=3)
    assert first == bootstrap_interval(values, resamples=1000, seed=3)
    assert first != bootstrap_interval(values, resamples=1000, seed=4)
    assert first.mean == pytest.approx(values.mean())
    assert first.low < first.mean < first.high


def test_rows_intervals_bracket_their_means_and_are_deterministic(
    baseline: EvaluationResult, config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore
) -> None:
    again = evaluate(config, pool, FixedRoutePolicy(POOL, ["guesser", "solver"]), TRAIN, TEST, store)
    assert again.groups == baseline.groups
    for group in baseline.groups.values():
        for row in group.rows:
            for interval in (row.task_metric, row.f1, row.cost, row.reward):
                assert interval.low <= interval.mean + 1e-12 and interval.mean <= interval.high + 1e-12
    assert (baseline.overall.n, baseline.groups["sum"].n, baseline.groups["lucky"].n) == (8, 4, 4)
    assert baseline.counts == {"sum": (6, 4), "lucky": (2, 4)}


def test_router_walk_follows_the_graphs_context_and_cost(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, encoder: TextEncoder
) -> None:
    torch.manual_seed(0)
    policy = RouterPolicy.for_encoder(list(POOL), encoder, horizon=2)
    torch.nn.init.normal_(policy.actor.weight, std=3.0)  # decisions that depend on the context
    results = evaluate(config, pool, policy, TRAIN, TEST, store)
    graph = HierRouterGraph(config, policy=policy, chat_models=chat_models())
    router = results.strategies[ROUTER]
    for index, item in enumerate(TEST):
        out = graph.invoke(item.prompt)
        assert tuple(hop["model"] for hop in out["trace"]) == router.routes[index]
        assert out["cost"] == router.scores.cost[index]


# ------------------------------------------------------------------------------------ AIQ


def test_aiq_on_hand_computed_point_sets() -> None:
    # hull (0, .2) → (1, .6) → (2, .7); (1.5, .3) is dominated; the input is unsorted
    assert aiq([(2, 0.7), (1.5, 0.3), (0, 0.2), (1, 0.6)]) == pytest.approx((0.4 + 0.65) / 2)
    # a dearer, worse point does not pull the curve down: flat at 0.7 from 2 to 3
    assert aiq([(0, 0.2), (1, 0.6), (2, 0.7), (3, 0.5)]) == pytest.approx((0.4 + 0.65 + 0.7) / 3)
    # a point under the chord is not on the convex hull
    assert aiq([(0, 0.2), (1, 0.3), (2, 0.7)]) == pytest.approx(0.45)
    # a shared cost range: nothing below the cheapest point, flat above the dearest
    assert aiq([(1, 0.4), (2, 0.6)], cost_range=(0, 3)) == pytest.approx((0.5 + 0.6) / 3)
    # degenerate: one point, or no cost range → the best quality there
    assert aiq([(1.0, 0.3)]) == 0.3
    assert aiq([(1.0, 0.3), (1.0, 0.5)]) == 0.5
    with pytest.raises(ValueError):
        aiq([])
    with pytest.raises(ValueError):
        aiq([(float("nan"), 0.1)])


def test_alpha_points_and_aiq_in_the_evaluation(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, test_tree: OutcomeTree
) -> None:
    policies = {
        0.5: FixedRoutePolicy(POOL, ["guesser", "guesser"]),
        0.0: FixedRoutePolicy(POOL, ["guesser", "solver"]),
    }
    points = alpha_points(config, pool, policies, TEST, store)
    assert [p.alpha for p in points] == [0.0, 0.5]
    assert points[0].cost == pytest.approx(_mean_over_test(test_tree, ("guesser", "solver"), "cost"))
    assert points[0].quality == 0.5 and points[1].quality == 0.5
    results = evaluate(config, pool, None, TRAIN, TEST, store, alpha_policies=policies)
    assert results.alpha_points == points
    assert isinstance(results.aiq[f"{ROUTER} (α sweep)"], float)
    assert isinstance(results.aiq["fixed routes (zero router)"], float)
    no_sweep = evaluate(config, pool, None, TRAIN, TEST, store)
    assert no_sweep.aiq[ROUTER] is None and no_sweep.aiq["oracle"] is None


# ------------------------------------------------------------------------------------ report + CLI


def test_report_plot_and_console_table(baseline: EvaluationResult, tmp_path: Path) -> None:
    command = "python training/evaluate.py --seed 0 --items test.jsonl"
    report = write_report(baseline, tmp_path / "docs" / "results.md", command=command, seed=0)
    text = report.read_text()
    assert "| strategy | route | task metric | token-F1 | mean cost | reward Q − αC | gap recovered" in text
    assert f"`{command}`" in text and "**Seed:** 0" in text
    assert "## Overall (n = 8)" in text and "## Task `sum` (n = 4)" in text
    assert "chosen on the train split (n = 8)" in text and NO_SWEEP in text
    assert "α** = 0.005 · **L** = 2" in text and "inside the noise" in text
    png = plot_cost_quality(baseline, tmp_path / "docs" / "cost_quality.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    out = io.StringIO()
    print_table(baseline, out)
    assert "overall (n=8" in out.getvalue() and ROUTER in out.getvalue()


def test_cli_evaluates_a_saved_policy_and_a_sweep(
    config: RouterConfig, store: ReplayStore, encoder: TextEncoder, tmp_path: Path
) -> None:
    config.to_file(tmp_path / "router.yaml")
    write_jsonl_dataset(TEST, tmp_path / "test.jsonl")
    write_jsonl_dataset(TRAIN, tmp_path / "train.jsonl")
    for name, alpha in (("run-a", 0.0), ("run-b", 0.05)):
        torch.manual_seed(len(name) + int(alpha * 100))
        policy = RouterPolicy.for_encoder(list(POOL), encoder, horizon=2)
        policy.save(tmp_path / name / "policy", extra={"training": {"alpha": alpha}})
    argv = [
        "--config", str(tmp_path / "router.yaml"), "--items", str(tmp_path / "test.jsonl"),
        "--train-items", str(tmp_path / "train.jsonl"), "--replay", str(store.path),
        "--policy", str(tmp_path / "run-a"),
        "--sweep-run-dirs", str(tmp_path / "run-a"), str(tmp_path / "run-b"),
        "--report", str(tmp_path / "results.md"), "--plot", str(tmp_path / "plot.png"), "--no-progress",
        "--resamples", "200",
    ]  # fmt: skip
    results = run_from_cli(parse_args(argv), chat_models=chat_models(), encoder=encoder, command="CMD")
    assert results.n_test == 8 and results.n_train == 8 and results.best_fixed_source == "train"
    assert [p.alpha for p in results.alpha_points] == [0.0, 0.05]
    assert "`CMD`" in (tmp_path / "results.md").read_text() and (tmp_path / "plot.png").stat().st_size > 0


def test_cli_without_a_replay_store_exits_2_naming_record_py(
    config: RouterConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.to_file(tmp_path / "router.yaml")
    write_jsonl_dataset(TEST, tmp_path / "test.jsonl")
    argv = ["--config", str(tmp_path / "router.yaml"), "--items", str(tmp_path / "test.jsonl"),
            "--replay", str(tmp_path / "missing.sqlite"), "--no-policy", "--no-report"]  # fmt: skip
    assert main(argv) == 2
    assert "training/record.py" in capsys.readouterr().err
