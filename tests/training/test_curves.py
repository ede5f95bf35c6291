"""Learned single-hop baselines through ``evaluate``, router-family curves, AIQ, APGR and CPT.

The pool is test_evaluate's scripted one (L = 2): on ``sum`` queries only a route ending in
``solver`` after a first hop scores; on ``lucky`` queries ``guesser`` alone already does. So the
best route depends on the query, and a fake encoder that reads the query's kind (as a topic would)
gives the learned routers exactly what they need to find it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hierrouter_graph import RouterConfig
from hierrouter_graph.graph import build_pool
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.policy.protocol import FixedRoutePolicy, PolicyTraits
from tests.training.scripted_pool import POOL, chat_models, lucky_items, make_items, scripted_config
from training.evaluation import curves as cv
from training.evaluation.evaluate import evaluate
from training.evaluation.learned_routers import KNN, MLP, fit_routers, query_embeddings
from training.evaluation.reports import write_report
from training.evaluation.seeds import seed_spread
from training.evaluation.statistics import aiq, apgr, cpt, quality_curve
from training.evaluation.strategies import oracle_routes
from training.experiments.curve_study import run_study
from training.experiments.curves_report import markdown_section, plot_curves
from training.replay.record import record_outcome_tree
from training.replay.store import ReplayStore
from training.replay.tree import OutcomeTree, candidate_routes, outcome_tree
from training.rl.args import PPOArgs

TRAIN = [*make_items(16, offset=100), *lucky_items(16, offset=100)]
TEST = [*make_items(6), *lucky_items(6)]


class TopicEncoder:
    """Reads the query's kind into the first two coordinates (plus a little per-text noise)."""

    name = "topic-test"
    dim = 6

    def encode(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            rng = np.random.default_rng(sum(map(ord, text)))
            topic = [1.0, 0.0] if "What is" in text else [0.0, 1.0]
            rows.append([*topic, *(0.05 * rng.standard_normal(self.dim - 2))])
        return torch.tensor(rows, dtype=torch.float32)


@pytest.fixture(scope="module")
def config() -> RouterConfig:
    return scripted_config()


@pytest.fixture(scope="module")
def pool(config: RouterConfig) -> dict[str, PoolMember]:
    return build_pool(config, chat_models(solves_after_answer=True))


@pytest.fixture(scope="module")
def store(config: RouterConfig, pool: dict[str, PoolMember], tmp_path_factory: pytest.TempPathFactory) -> Any:
    with ReplayStore(tmp_path_factory.mktemp("replay") / "replay.sqlite") as replay:
        record_outcome_tree(config, pool, [*TRAIN, *TEST], replay, progress=False)
        yield replay


@pytest.fixture(scope="module")
def test_tree(config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore) -> OutcomeTree:
    return outcome_tree(config, pool, TEST, store)


# ------------------------------------------------------------------------------------ learned baselines


def test_knn_and_mlp_rows_recover_the_query_dependent_best_route(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, test_tree: OutcomeTree
) -> None:
    router = FixedRoutePolicy(POOL, ["guesser", "solver"])
    results = evaluate(config, pool, router, TRAIN, TEST, store, resamples=200, encoder=TopicEncoder())
    best = oracle_routes(test_tree, TEST, candidate_routes(config))
    assert {best[0], best[-1]} == {("guesser", "solver"), ("guesser",)}  # sum vs lucky: it depends
    learned = [s for s in results.strategies.values() if s.kind == "learned"]
    assert [s.name.split(" (")[0] for s in learned] == [KNN, MLP]
    for strategy in learned:
        assert list(strategy.routes) == best, strategy.name
        for group in results.groups.values():  # every table has the row, interval, Δ and routes
            row = group.row(strategy.name)
            assert row.reward.low <= row.reward.mean <= row.reward.high
            assert row.vs_best_single is not None
            assert sum(group.routes_taken[strategy.name].values()) == group.n
    overall = results.overall
    assert overall.row(learned[0].name).reward.mean == pytest.approx(
        overall.row("oracle (per query)").reward.mean
    )
    pair = results.router_pairs[("HierRouter", learned[0].name)]  # paired per query: router − kNN
    expected = overall.row("HierRouter").reward.mean - overall.row(learned[0].name).reward.mean
    assert pair.mean == pytest.approx(expected) and pair.low <= pair.mean <= pair.high


def test_learned_rows_are_left_out_with_a_note_without_train_tree_or_encoder(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore
) -> None:
    no_encoder = evaluate(config, pool, None, TRAIN, TEST, store, resamples=50)
    no_train = evaluate(config, pool, None, [], TEST, store, resamples=50, encoder=TopicEncoder())
    for results in (no_encoder, no_train):
        assert not [s for s in results.strategies.values() if s.kind == "learned"]
        assert any("kNN/MLP routers left out" in note for note in results.notes)


def test_seed_mean_row_is_the_per_query_mean_of_the_seeds(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, tmp_path: Path
) -> None:
    seeds = {
        1: FixedRoutePolicy(POOL, ["guesser", "solver"]),
        2: FixedRoutePolicy(POOL, ["guesser", "guesser"]),
    }
    results = evaluate(config, pool, None, TRAIN, TEST, store, resamples=50, seed_policies=seeds)
    row = results.strategies["HierRouter (mean of 2 seeds)"]
    singles = [results.strategies["guesser (×2)"], results.strategies["guesser (1 call)"]]
    assert row.kind == "router_seeds" and singles[0].kind == "single"
    assert [run.seed for run in results.seed_runs] == [1, 2]
    assert np.mean([run.reward for run in results.seed_runs]) == pytest.approx(row.scores.reward.mean())
    assert results.seed_runs[1].reward == pytest.approx(singles[0].scores.reward.mean())
    std, low, high = seed_spread(results.seed_runs)
    assert std == pytest.approx(float(np.std([r.reward for r in results.seed_runs], ddof=1)))
    text = write_report(results, tmp_path / "results.md", command="CMD").read_text()
    assert "### PPO seeds (overall)" in text and "| **HierRouter (mean of 2 seeds)** |" in text
    assert f"range {low:.4f}–{high:.4f}" in text


# ------------------------------------------------------------------------------------ AIQ, APGR, CPT


def test_quality_curve_and_aiq_of_a_known_hull() -> None:
    points = [(3.0, 0.5), (0.0, 0.2), (1.0, 0.6), (2.0, 0.7), (1.0, 0.1), (1.5, 0.3)]
    assert quality_curve(points) == [(0.0, 0.2), (1.0, 0.6), (2.0, 0.7), (3.0, 0.7)]
    # trapezoids 0.4 + 0.65 + 0.7 over a range of 3
    assert aiq(points) == pytest.approx((0.4 + 0.65 + 0.7) / 3)
    # on a wider shared range: 0 below the cheapest point (−1..0), flat after the dearest (3..4)
    assert aiq(points, cost_range=(-1.0, 4.0)) == pytest.approx((0.4 + 0.65 + 0.7 + 0.7) / 5)


def test_apgr_and_cpt_on_a_hand_computed_example() -> None:
    weak, strong = (1.0, 0.2), (3.0, 0.6)
    # in gap units: (0, 0), (0.5, 0.75), (1, 1): APGR = 0.5·0.375 + 0.5·0.875; PGR 0.5 at x = 1/3
    family = [(1.0, 0.2), (2.0, 0.5), (3.0, 0.6)]
    assert apgr(family, weak, strong) == pytest.approx(0.625)
    assert cpt(family, weak, strong) == pytest.approx(1 / 3)
    # randomising between weak and strong: the chord
    assert apgr([weak, strong], weak, strong) == pytest.approx(0.5)
    assert cpt([weak, strong], weak, strong) == pytest.approx(0.5)
    # the strong member's quality at no cost: the whole gap from x = 0
    assert apgr([(0.0, 0.6)], weak, strong) == pytest.approx(1.0) and cpt([(0.0, 0.6)], weak, strong) == 0.0
    # never half way: CPT is infinite; the curve is 0.25 from x = 1 on... and 0 below its first point
    assert cpt([(3.0, 0.3)], weak, strong) == math.inf
    assert apgr([(2.0, 0.3)], weak, strong) == pytest.approx(0.5 * 0.25)
    with pytest.raises(ValueError, match="strong member"):
        apgr(family, weak, weak)
    one = cv.Curve("one", ("a",), (math.nan,), np.array([[2.0]]), np.array([[0.5]]), np.array([[0.5]]))
    assert all(math.isnan(v) for v in cv.routellm_scores(one, weak, weak))  # no trade-off: n/a
    assert cv.routellm_scores(one, weak, strong) == (apgr([(2.0, 0.5)], weak, strong), pytest.approx(0.5))


# ------------------------------------------------------------------------------------ curves


def test_families_trace_the_trade_off_on_a_scripted_tree(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, test_tree: OutcomeTree
) -> None:
    candidates = candidate_routes(config)
    alphas = [0.0, 0.01, 1000.0]
    oracle = cv.trace("oracle", cv.oracle_family(test_tree, TEST, candidates), alphas, test_tree, TEST)
    zero = cv.fixed_curve(test_tree, TEST, candidates)
    cheapest = min(zero.points(), key=lambda p: p[0])
    (_, q0), (_, q1), (c2, _) = oracle.points()
    assert q0 == q1 == 1.0  # every query has a scoring route, and cost barely matters
    assert c2 <= cheapest[0]  # at a huge α: each query's cheapest route, whatever it scores
    assert oracle.labels == ("α = 0", "α = 0.01", "α = 1000")

    train_tree = outcome_tree(config, pool, TRAIN, store)
    embeddings = query_embeddings(TopicEncoder(), [*TRAIN, *TEST])
    fitted = fit_routers(train_tree, TRAIN, embeddings, candidates)
    knn = cv.trace(KNN, cv.learned_family(fitted, KNN, embeddings, TEST), alphas, test_tree, TEST)
    fixed = cv.trace(
        "fixed", cv.best_fixed_family(train_tree, TRAIN, candidates, len(TEST)), alphas, test_tree, TEST
    )
    assert knn.points()[1] == pytest.approx(oracle.points()[1])  # per query, like the oracle
    assert fixed.points()[1][1] == 0.5  # one route for everyone: right on one task only

    policies = {a: FixedRoutePolicy(POOL, ["guesser", "solver"]) for a in alphas}
    routed = cv.trace("policy", cv.policy_family(policies, config, test_tree, TEST), alphas, test_tree, TEST)
    mean = cv.mean_curve("mean", [routed, routed])
    assert mean.points() == routed.points()

    scores = cv.aiq_intervals([oracle, knn, fixed], zero, resamples=100)
    assert scores[zero.family].vs_zero.mean == 0.0
    assert scores["oracle"].aiq.mean >= scores[zero.family].aiq.mean
    for result in scores.values():
        assert result.aiq.low <= result.aiq.mean + 1e-12 and result.aiq.mean <= result.aiq.high + 1e-12


def test_study_trains_a_policy_per_alpha_and_writes_the_report(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    args = PPOArgs(iterations=1, rollouts=8, num_minibatches=2, update_epochs=1, hidden_size=16)
    study = run_study(
        config, pool, TRAIN, TEST, store, TopicEncoder(), [0.0, 1.0], seeds=[1, 2], args=args,
        run_dir=tmp_path / "runs", resamples=50, log=lambda _: None,
    )  # fmt: skip
    names = [c.family for c in study.curves]
    assert names[0] == "HierRouter (PPO per α), mean of 2 seeds" and set(study.seed_aiq) == {1, 2}
    assert (tmp_path / "runs" / "seed2" / "L2-a1" / "policy" / "policy.json").is_file()
    assert {row.group for row in study.routellm} == {"overall", "sum", "lucky"}
    study.info = {"ppo": args.as_dict()}
    text = markdown_section(study, "CMD", tmp_path / "docs" / "curves.png", tmp_path / "docs" / "results.md")
    assert "`CMD`" in text and "| **HierRouter (PPO per α), mean of 2 seeds** |" in text and "APGR" in text
    png = plot_curves(study, tmp_path / "docs" / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class PricedPolicy(PolicyTraits):
    """An α-conditioned policy with a known rule: the planner→solver route (right, dearer) below
    α = 1, the guesser (cheap, wrong on sums) above."""

    pool = POOL
    alpha_range = (0.01, 100.0)

    def decide(self, context: str, stage: int, cost: float, *, alpha: float | None = None, **_: Any) -> Any:
        assert alpha is not None and 0.01 <= alpha <= 100.0  # the family clips into the range
        route = ["planner", "solver"] if alpha < 1 else ["guesser", "guesser"]
        return FixedRoutePolicy(POOL, route).decide(context, stage, cost)


def test_one_conditioned_policy_traces_a_curve_and_calibrates_to_a_cost(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, test_tree: OutcomeTree
) -> None:
    family = cv.conditioned_family(PricedPolicy(), config, test_tree, TEST)
    assert set(family(0.0)) == {("planner", "solver")}  # α = 0 asked at the range's lower end
    assert set(family(500.0)) == {("guesser", "guesser")}
    curve = cv.trace("conditioned", family, [0.0, 0.5, 2.0], test_tree, TEST)
    (dear, _), (same, _), (cheap, _) = curve.points()
    assert dear == same > cheap
    train_tree = outcome_tree(config, pool, TRAIN, store)
    train_family = cv.conditioned_family(PricedPolicy(), config, train_tree, TRAIN)
    dear_cost = float(np.mean([train_tree[i.id][("planner", "solver")].cost for i in TRAIN]))
    cheap_cost = float(np.mean([train_tree[i.id][("guesser", "guesser")].cost for i in TRAIN]))
    for target in (dear_cost, cheap_cost):
        alpha = cv.calibrate_family(train_family, train_tree, TRAIN, target)
        routes = train_family(alpha)
        spent = float(np.mean([train_tree[i.id][r].cost for i, r in zip(TRAIN, routes, strict=True)]))
        assert abs(spent - target) <= 0.05 * target, (alpha, spent, target)  # on TRAIN items
    assert (
        cv.calibrate_family(train_family, train_tree, TRAIN, dear_cost)
        < 1.0
        <= cv.calibrate_family(train_family, train_tree, TRAIN, cheap_cost)
    )


def test_study_trains_one_conditioned_policy_for_the_whole_grid(
    config: RouterConfig, pool: dict[str, PoolMember], store: ReplayStore, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    args = PPOArgs(iterations=1, rollouts=8, num_minibatches=2, update_epochs=1, hidden_size=16)
    study = run_study(
        config, pool, TRAIN, TEST, store, TopicEncoder(), [0.0, 0.1, 1.0], conditioned_seeds=[3],
        args=args, run_dir=tmp_path / "runs", resamples=20, log=lambda _: None,
    )  # fmt: skip
    assert study.curves[0].family == "HierRouter (one α-conditioned policy)"
    run = tmp_path / "runs" / "seed3-conditioned" / "L2-a0.1"
    meta = json.loads((run / "policy" / "policy.json").read_text())
    assert meta["alpha_range"] == [0.1, 1.0]
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=False)
    assert checkpoint["iteration"] == 3  # the per-α family's total: 1 iteration × 3 grid points


def test_curves_cli_trains_with_the_shipped_policys_lr_and_length_by_default() -> None:
    from training.cli.curves import parse_args

    recorded = json.loads(Path("hierrouter_graph/default_policy/policy.json").read_text())["training"]["args"]
    ns = parse_args([])
    assert (ns.learning_rate, ns.iterations) == (recorded["learning_rate"], recorded["iterations"])
    assert parse_args(["--lr", "0.003"]).learning_rate == 0.003
