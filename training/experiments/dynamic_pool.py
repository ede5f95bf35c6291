"""Dynamic pool: train a DescriptorPolicy without one member, add the member back, compare.

Why this experiment: the point of ``DescriptorPolicy`` is that a member can join the pool after
training. Whether that *helps* is an empirical question the library cannot answer by design, so
this script measures it on the default offline pool's recorded outcome tree:

1. **before** — the descriptor policy trained (PPO, paper defaults) on the pool minus ``--hold-out``
   (default ``cloze-mc``, the multiple-choice specialist), routed over that smaller pool;
2. **after** — the very same weights given the full pool (``with_pool``), no retraining;
3. **retrained** — the descriptor policy and the standard ``RouterPolicy`` (MLP) trained from
   scratch on the full pool, the ceiling "adding without retraining" is measured against;
4. for reference, the MLP trained on the smaller pool, and single models and the per-query oracle.

Everything is replay: the recorded store is COPIED with sqlite3's backup API into a temporary
folder (``runs/replay.sqlite`` is never written; it may be in use by a recording), and the pool's
shipped record (``training/replay/shipped.py``) is imported into that copy; a hop missing from both
raises instead of generating. Training uses the train items whose whole full-pool tree is recorded
(``tree.recorded_only``), the same items for every variant; the test split must be fully recorded.
Each variant is trained with each ``--seeds`` seed; test numbers are per seed, and seed-averaged per
query with 95% paired bootstrap intervals over the test queries (``evaluate.bootstrap_interval``).

    python training/dynamic_pool_experiment.py --report docs/results.md

The tables are ``training/experiments/dynamic_pool_report.py``; the command line is
``training/cli/dynamic_pool_experiment.py``.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.defaults import default_config
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.policy.dynamic import (
    DESCRIPTOR_KIND,
    KIND_PHRASES,
    DescriptorPolicy,
    ModelDescriptor,
    describe,
)
from hierrouter_graph.policy.trained import MLP_KIND
from training.evaluation.strategies import Scores, oracle_routes, router_routes
from training.replay.readers import CachedEncoder, ReplayOnlyCache
from training.replay.store import ReplayStore, StateEncoder
from training.replay.tree import OutcomeTree, Route, candidate_routes, outcome_tree, recorded_only
from training.rl.args import PPOArgs
from training.rl.setup import TrainablePolicy
from training.rl.train import train_router
from training.tasks.items import Item
from training.tasks.reward import ScoreMemo

__all__ = [
    "CONTROL_CARD",
    "DEFAULT_HOLD_OUT",
    "FALLBACK_CARDS",
    "MC_TASKS",
    "SECTION",
    "ExperimentResult",
    "Outcome",
    "copy_store",
    "experiment_configs",
    "run_experiment",
    "stage0_probabilities",
]

SECTION = "dynamic-pool"
"""Marked section of docs/results.md this script owns (``reports.write_marked_section``); another
``--hold-out`` writes ``dynamic-pool-<member>`` so the runs do not overwrite each other."""

DEFAULT_HOLD_OUT = "cloze-mc"

MC_TASKS = ("arc_easy", "arc_challenge", "mmlu")
"""Multiple-choice tasks: the only ones where ``cloze-mc`` can score."""

FALLBACK_CARDS = {
    "cloze-mc": "Multiple-choice specialist: for a question with lettered options (A, B, C, D) it "
    "scores every option by log-likelihood and answers with the best letter; it refuses anything "
    "that is not multiple choice (math, code).",
}
"""Descriptions given to a held-out member whose default spec has none (the policy's only view of it)."""

CONTROL_CARD = f"{KIND_PHRASES['generate']}. Small general-purpose instruction-tuned chat model."
"""The control: the held-out member added with this generic generalist card instead of its own (same
price and size). If routing to it does not change, the card text is not what drives it."""


# ---------------------------------------------------------------------------------- set-up


def copy_store(source: Path, target: Path) -> None:
    """Copy a replay store with sqlite3's online backup API, opening the source read-only.

    Why not ``cp``: the source may be written by a recording right now (WAL); the backup API gives a
    consistent snapshot, and a read-only connection can never write to it.
    """
    src = sqlite3.connect(f"file:{source.resolve()}?mode=ro", uri=True)
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def experiment_configs(hold_out: str) -> tuple[RouterConfig, RouterConfig]:
    """(full pool, pool without ``hold_out``), both from ``default_config()``.

    The held-out member gets ``FALLBACK_CARDS``'s description only when its own is empty; the
    description is not part of ``ModelSpec.fingerprint()``, so replay keys are unchanged.
    """
    full = default_config()
    if hold_out not in full.model_names:
        raise ValueError(f"--hold-out {hold_out!r} is not in the default pool {full.model_names}")
    models = []
    for spec in full.models:
        if spec.name == hold_out and not spec.description.strip() and hold_out in FALLBACK_CARDS:
            spec = spec.model_copy(update={"description": FALLBACK_CARDS[hold_out]})
        models.append(spec)
    full = full.model_copy(update={"models": models})
    held = full.model_copy(update={"models": [s for s in models if s.name != hold_out]})
    if len(held.models) < 1 or len(held.models) == len(models):
        raise ValueError(f"holding out {hold_out!r} leaves no pool to train on")
    return full, held


@dataclass(frozen=True)
class Outcome:
    """One strategy on the test split: per-query scores and routes, seed by seed."""

    name: str
    scores: list[Scores]
    routes: list[list[Route]]

    def mean(self, column: str) -> np.ndarray:
        """Per-query value of ``column`` averaged over seeds."""
        return np.mean([getattr(s, column) for s in self.scores], axis=0)


def _routes_scores(tree: OutcomeTree, items: Sequence[Item], routes: Sequence[Route]) -> Scores:
    return Scores.of([tree[item.id][route] for item, route in zip(items, routes, strict=True)])


# ---------------------------------------------------------------------------------- training


def _train(
    kind: str,
    config: RouterConfig,
    items: Sequence[Item],
    pool: Mapping[str, PoolMember],
    state_encoder: Any,
    cache: Any,
    seed: int,
    run_dir: Path,
    base: PPOArgs,
) -> TrainablePolicy:
    """One PPO run (resumable: a finished run dir is loaded back, not retrained)."""
    args = PPOArgs(**{**base.as_dict(), "seed": seed, "policy_kind": kind})
    began = time.perf_counter()
    experiment = {"experiment": "dynamic_pool"}
    result = train_router(config, items, pool, state_encoder, args, run_dir, cache=cache, metadata=experiment)
    final = result.final
    print(
        f"  trained {kind:10s} on {config.model_names} seed {seed}: last-iteration quality "
        f"{final.get('mean_quality', float('nan')):.3f} ({time.perf_counter() - began:.0f} s)",
        file=sys.stderr,
    )
    result.policy.eval()
    return result.policy


def stage0_probabilities(policy: DescriptorPolicy, items: Sequence[Item]) -> np.ndarray:
    """[2, M]: mean stage-0 probability of each member on multiple-choice (row 0) and other prompts.

    Why: a member added without retraining is only useful if the policy sends it the queries it is
    good at; equal rows mean the card shifted a global preference, not a query-dependent one.
    """
    probs = np.array([[policy.decide(i.prompt, 0, 0.0).probs[m] for m in policy.pool] for i in items])
    mc = np.array([item.task in MC_TASKS for item in items])
    return np.stack([probs[mc].mean(axis=0), probs[~mc].mean(axis=0)])


# ---------------------------------------------------------------------------------- experiment


@dataclass
class ExperimentResult:
    """What ``dynamic_pool_report`` tabulates: the strategies, the single-model and oracle rows, the
    paired comparisons (label, strategy a, strategy b) and the notes on how it was run."""

    outcomes: list[Outcome]
    context_rows: list[tuple[str, Scores, list[Route]]]
    comparisons: list[tuple[str, str, str]]
    notes: list[str]


def run_experiment(
    hold_out: str,
    pool: Mapping[str, PoolMember],
    train_items: list[Item],
    data_info: dict[str, Any],
    test_items: Sequence[Item],
    store: ReplayStore,
    encoder: StateEncoder,
    run_dir: Path,
    *,
    seeds: Sequence[int],
    base: PPOArgs,
    notes: Sequence[str] = (),
) -> ExperimentResult:
    """Train every variant with every seed on the recorded train items (replay only, from
    ``store``), route the test items, and compare: before adding ``hold_out``, after adding it with
    its own card and with the control card, and retrained from scratch."""
    full, held = experiment_configs(hold_out)
    notes = list(notes)
    train_items, info = recorded_only(full, pool, train_items, data_info, store)
    per_task = ", ".join(f"{t} {n}" for t, n in info["recorded_per_task"].items())
    notes.append(
        f"Train: the {len(train_items)} of {info['items_requested']} train items whose full-pool "
        f"tree is recorded ({per_task}); the same items for every variant."
    )
    cache = ReplayOnlyCache(store)
    state_encoder = CachedEncoder(encoder, store)
    memo = ScoreMemo()
    tree = outcome_tree(full, pool, test_items, store, memo=memo)
    notes.append(
        "Cards: "
        + "; ".join(f"`{spec.name}`: “{describe(spec).card}”" for spec in full.models)
        + " (plus ln price and ln size; see docs/architecture.md)."
    )

    variants = [
        (DESCRIPTOR_KIND, held, f"descriptor, trained without {hold_out} — before adding"),
        (DESCRIPTOR_KIND, full, "descriptor, retrained on the full pool"),
        (MLP_KIND, full, "MLP RouterPolicy, retrained on the full pool"),
        (MLP_KIND, held, f"MLP RouterPolicy, trained without {hold_out}"),
    ]
    after_name = f"descriptor, same weights, {hold_out} added (no retraining)"
    scores: dict[str, list[Scores]] = {name: [] for _, _, name in variants}
    routes: dict[str, list[list[Route]]] = {name: [] for _, _, name in variants}
    control_name = f"control: same weights, {hold_out} added with a generic card"
    control_pool: list[ModelDescriptor] = [
        dataclasses.replace(describe(spec), card=CONTROL_CARD) if spec.name == hold_out else describe(spec)
        for spec in full.models
    ]
    for extra in (after_name, control_name):
        scores[extra], routes[extra] = [], []
    probability: list[np.ndarray] = []
    probability_control: list[np.ndarray] = []
    for seed in seeds:
        for kind, config, name in variants:
            tag = f"without-{hold_out}" if config is held else "full"
            # keyed by the number of train items: a store recorded further trains anew
            run_dir = run_dir / f"n{len(train_items)}" / f"seed{seed}" / f"{kind}-{tag}"
            policy = _train(kind, config, train_items, pool, state_encoder, cache, seed, run_dir, base)
            policy_routes = router_routes(policy, config, tree, test_items)
            scores[name].append(_routes_scores(tree, test_items, policy_routes))
            routes[name].append(policy_routes)
            if kind == DESCRIPTOR_KIND and config is held:
                assert isinstance(policy, DescriptorPolicy)
                added = policy.with_pool(full.models)  # the point: no retraining
                added_routes = router_routes(added, full, tree, test_items)
                scores[after_name].append(_routes_scores(tree, test_items, added_routes))
                routes[after_name].append(added_routes)
                probability.append(stage0_probabilities(added, test_items))
                control = policy.with_pool(control_pool)
                control_routes = router_routes(control, full, tree, test_items)
                probability_control.append(stage0_probabilities(control, test_items))
                scores[control_name].append(_routes_scores(tree, test_items, control_routes))
                routes[control_name].append(control_routes)

    order = [variants[0][2], after_name, control_name, variants[1][2], variants[2][2], variants[3][2]]
    outcomes = [Outcome(name, scores[name], routes[name]) for name in order]
    for label, probs in (("its own card", probability), ("the generic control card", probability_control)):
        mean = np.mean(probs, axis=0)
        cells = ", ".join(
            f"`{name}` {mean[0, i]:.3f} / {mean[1, i]:.3f}" for i, name in enumerate(full.model_names)
        )
        notes.append(
            f"After adding with {label}, mean stage-0 probability on multiple-choice / other test prompts "
            f"(mean over seeds): {cells}."
        )
    context_rows: list[tuple[str, Scores, list[Route]]] = []
    for name in full.model_names:
        single: list[Route] = [(name,)] * len(test_items)
        context_rows.append((f"{name} (1 call)", _routes_scores(tree, test_items, single), single))
    oracle = oracle_routes(tree, test_items, candidate_routes(full))
    context_rows.append(("oracle (per query, full pool)", _routes_scores(tree, test_items, oracle), oracle))
    comparisons = [
        ("after adding − before adding", after_name, order[0]),
        ("after adding − control (generic card)", after_name, control_name),
        ("after adding − descriptor retrained on full pool", after_name, order[3]),
        ("after adding − MLP retrained on full pool", after_name, order[4]),
        ("descriptor retrained − MLP retrained (full pool)", order[3], order[4]),
    ]
    return ExperimentResult(outcomes, context_rows, comparisons, notes)
