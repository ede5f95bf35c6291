"""The outcome tree: every route of length 1..L of every item, walked in ONE place.

Why one walker: recording (``record.py``), the "is it recorded?" probe, the states a router
decides in (PPO's batched encode, the shipped embeddings) and the replayed, scored tree every
strategy is read off (``evaluate.py``) are all the same breadth-first walk — stage by stage, each
model over the distinct contexts of the level, each node advanced by the library's route step
(``hierrouter_graph.route.advance``). ``walk`` is that walk; the rest are views of it that differ
only in how a level's hops are obtained (replay, probe, generate) and what they keep.

Outcomes keep Q and C; the reward R = Q − α·C (``training.tasks.reward.terminal_reward``) is computed on
read, so one replayed tree serves every α (``reprice``).
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from hierrouter_graph.confidence import Confidence
from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import HopResult, ReplyCache, run_hop, run_hops
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.route import Route, RouteState, advance
from training.replay.readers import ReplayMissError, ReplayOnlyCache
from training.replay.store import StateEncoder
from training.tasks.items import Item
from training.tasks.reward import ScoreMemo, reward_metric_of, terminal_reward

__all__ = [
    "HopsFor",
    "OutcomeTree",
    "Route",
    "RouteOutcome",
    "candidate_routes",
    "complete_items",
    "decision_contexts",
    "encode_recorded_states",
    "outcome_tree",
    "recorded_hop",
    "recorded_only",
    "reprice",
    "route_label",
    "shared_tree",
    "tree_size",
    "walk",
    "with_horizon",
]

HopsFor = Callable[[PoolMember, list[str], str, int | None], Mapping[str, HopResult]]
"""How a level's hops are obtained: (member, distinct contexts, stage instruction) → context → hop."""


def route_label(route: Route) -> str:
    return " → ".join(route)


def candidate_routes(config: RouterConfig) -> list[Route]:
    """Every route of length 1..L, shortest first, each length in ``itertools.product`` order."""
    names = config.model_names
    return [r for length in range(1, config.horizon + 1) for r in itertools.product(names, repeat=length)]


def with_horizon(config: RouterConfig, horizon: int) -> RouterConfig:
    """``config`` answering in ``horizon`` hops (validated like any config).

    Stages beyond the config's stage prompts reuse its last one (for the paper's prompts: "verify
    … and solve") unless it sets ``stage_prompt_fallback``. Why: the deeper tree then shares every
    prompt of the shallower one, so recording L=3 extends the recorded L=2 tree hop for hop and
    the L=2 prefixes replay unchanged.
    """
    data = config.model_dump()
    data["horizon"] = horizon
    if horizon > len(config.stage_prompts) and config.stage_prompt_fallback is None:
        data["stage_prompt_fallback"] = config.stage_prompts[-1]
    return RouterConfig.model_validate(data)


def tree_size(n_items: int, n_models: int, horizon: int) -> int:
    """N·(M + M² + … + M^L): hops in the full outcome tree."""
    return n_items * sum(n_models**level for level in range(1, horizon + 1))


# ---------------------------------------------------------------------------------- the walker


def walk(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    roots: Sequence[str],
    hops_for: HopsFor,
    *,
    depth: int | None = None,
) -> Iterator[list[tuple[int, RouteState]]]:
    """Grow the outcome tree of ``roots`` (queries) breadth-first; yield each level's nodes.

    At stage ℓ every model is asked once for the distinct contexts of the level (so identical
    contexts — duplicate prompts, routes that happen to give the same replies — cost one hop);
    every node of the level is then advanced by that model's hop. A node is (root index, state);
    levels list models outermost, in pool order. ``depth`` stops after that many stages (default L).
    """
    frontier = [(index, RouteState.start(query)) for index, query in enumerate(roots)]
    for stage in range(config.horizon if depth is None else depth):
        instruction, cap = config.stage_prompt(stage), config.stage_token_cap(stage)
        contexts = list(dict.fromkeys(state.context for _, state in frontier))
        following: list[tuple[int, RouteState]] = []
        for name in config.model_names:
            hops = hops_for(pool[name], contexts, instruction, cap)
            following += [(index, advance(state, name, hops[state.context])) for index, state in frontier]
        yield following
        frontier = following


def recorded_hop(
    member: PoolMember, context: str, instruction: str, store: ReplyCache, max_new_tokens: int | None = None
) -> HopResult | None:
    """The hop as replayed from ``store``, or None when it is not recorded (nothing generates)."""
    try:
        return run_hop(member, context, instruction, ReplayOnlyCache(store), max_new_tokens)
    except ReplayMissError:
        return None


def _replayed(cache: ReplyCache | None, chunk: int = 0) -> HopsFor:
    """``run_hops`` (the graph's hop, batched) through ``cache``, in chunks of ``chunk`` contexts."""

    def hops_for(
        member: PoolMember, contexts: list[str], instruction: str, cap: int | None
    ) -> dict[str, HopResult]:
        size = chunk or max(len(contexts), 1)
        results: list[HopResult] = []
        for start in range(0, len(contexts), size):
            results += run_hops(member, contexts[start : start + size], instruction, cache, cap)
        return dict(zip(contexts, results, strict=True))

    return hops_for


def complete_items(
    config: RouterConfig, pool: Mapping[str, PoolMember], items: Sequence[Item], store: ReplyCache
) -> list[Item]:
    """The items whose full outcome tree (every route of length 1..L) is in ``store``.

    Probes with the hop's own code (``ReplayOnlyCache``), so "complete" means exactly "replay will
    never miss on any route of this item".
    """
    probe = _replayed(ReplayOnlyCache(store))
    complete: list[Item] = []
    for item in items:
        try:
            for _level in walk(config, pool, [item.prompt], probe):
                pass
        except ReplayMissError:
            continue
        complete.append(item)
    return complete


def decision_contexts(
    config: RouterConfig, pool: Mapping[str, PoolMember], items: Sequence[Item], cache: ReplyCache
) -> list[str]:
    """Every context a router decides in on the trees of ``items``: depth 0..L-1, distinct, in order.

    Why: these (not the final contexts, where no decision is taken) are the states training and
    evaluation encode, so they are what gets encoded in batches up front and shipped. Read from
    ``cache`` with the hop's own code; an item whose tree is incomplete is generated through.
    """
    roots = [item.prompt for item in items]
    contexts = list(roots)
    for level in walk(config, pool, roots, _replayed(cache), depth=config.horizon - 1):
        contexts += [state.context for _, state in level]
    return list(dict.fromkeys(contexts))


def encode_recorded_states(
    encoder: StateEncoder,
    config: RouterConfig,
    pool: Mapping[str, Any],
    items: Sequence[Item],
    cache: ReplyCache,
    batch_size: int = 256,
) -> int:
    """Encode every context a decision is taken in (depth 0..L-1 of the recorded trees) in batches.

    Why: episodes encode one state at a time, which on a CPU costs ~10x more per text than a
    batch; a fresh replay store (``make demo``) would otherwise spend most of its PPO run in the
    encoder. ``CachedEncoder`` keeps each vector, so the episodes then only look them up; the
    shipped record's embeddings (``training/replay/shipped.py``) usually make this a lookup too.
    Returns the number of distinct contexts.
    """
    distinct = decision_contexts(config, pool, items, cache)
    for start in range(0, len(distinct), batch_size):
        encoder.encode(distinct[start : start + batch_size])
    return len(distinct)


def recorded_only(
    config: RouterConfig,
    pool: Mapping[str, Any],
    items: list[Item],
    data_info: dict[str, Any],
    store: Any,
) -> tuple[list[Item], dict[str, Any]]:
    """Keep the items whose whole outcome tree is recorded; say how many were left out.

    Why: replay-only training must never miss, and a recording cut off part-way (they take hours
    on a CPU) should still train on everything it finished instead of failing or generating.
    """
    complete = complete_items(config, pool, items, store)
    if not complete:
        raise ReplayMissError(
            f"none of the {len(items)} training items has its outcome tree in the replay store; "
            "record it first (python training/record.py --split train ...) or pass --live"
        )
    if len(complete) < len(items):
        print(
            f"training on the {len(complete)} of {len(items)} train items whose outcome tree is "
            "recorded (record more with training/record.py --split train --chunk-items 48, or --live)",
            file=sys.stderr,
        )
    info = {**data_info, "items": len(complete), "items_requested": len(items)}
    info["tasks_present"] = sorted({item.task for item in complete})
    info["recorded_per_task"] = {
        task: sum(item.task == task for item in complete) for task in info["tasks_present"]
    }
    return complete, info


# ---------------------------------------------------------------------------------- scored tree


@dataclass(frozen=True)
class RouteOutcome:
    """One route of one item, replayed: the context the graph would end with, and its scores.

    Q and C are what the tree holds; the reward is R = Q − α·C at the tree's ``alpha``, computed
    on read (``reprice`` gives the same tree at another α without replaying or rescoring it).
    """

    route: Route
    context: str
    task_metric: float
    f1: float
    quality: float
    cost: float
    alpha: float
    confidence: Confidence | None = None
    """The last hop's confidence: what an uncertainty_state router sees at the next decision."""

    @property
    def reward(self) -> float:
        return terminal_reward(self.quality, self.cost, self.alpha)


OutcomeTree = dict[str, dict[Route, RouteOutcome]]
"""item id → route (every length 1..L) → outcome."""


def reprice(tree: OutcomeTree, alpha: float) -> OutcomeTree:
    """The same outcomes read at another α (nothing is replayed or scored again)."""
    return {
        item_id: {route: dataclasses.replace(outcome, alpha=alpha) for route, outcome in node.items()}
        for item_id, node in tree.items()
    }


def _check_items(items: Sequence[Item]) -> None:
    counts = Counter(item.id for item in items)
    repeated = sorted(i for i, n in counts.items() if n > 1)
    if repeated:
        raise ValueError(f"item ids must be unique (the tree is keyed by id); repeated: {repeated[:5]}")


def outcome_tree(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    items: Sequence[Item],
    cache: ReplyCache | None,
    *,
    reward_metric: str = "task",
    alpha: float | None = None,
    live: bool = False,
    memo: ScoreMemo | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> OutcomeTree:
    """Replay every route of length 1..L of every item and score each node.

    Replay-only by default: a hop missing from ``cache`` raises ``ReplayMissError`` naming
    ``training/record.py``. ``live=True`` generates missing hops (and stores them in ``cache``
    when one is given). Costs accumulate hop by hop exactly as the graph and the env add them.
    ``shared_tree`` replays a tree once per memo and reprices it for every α asked.
    """
    reward_metric_of(reward_metric)
    missing = [name for name in config.model_names if name not in pool]
    if missing:
        raise KeyError(f"pool lacks models {missing} named by the config {config.model_names}")
    if cache is None and not live:
        raise ValueError("replay-only evaluation needs the replay store as cache (or live=True)")
    _check_items(items)
    alpha = config.alpha if alpha is None else alpha
    memo = memo if memo is not None else ScoreMemo()
    hop_cache: ReplyCache | None = cache if live or cache is None else ReplayOnlyCache(cache)
    tree: OutcomeTree = {item.id: {} for item in items}
    with tqdm(total=tree_size(len(items), len(config.model_names), config.horizon), unit="node",
              desc="outcome tree", disable=not progress) as bar:  # fmt: skip
        for level in walk(config, pool, [item.prompt for item in items], _replayed(hop_cache, batch_size)):
            scores = memo.score_all([(items[index], state.answer) for index, state in level], reward_metric)
            for (index, state), quality in zip(level, scores, strict=True):
                item = items[index]
                tree[item.id][state.route] = RouteOutcome(
                    route=state.route,
                    context=state.context,
                    task_metric=quality["task_metric"],
                    f1=quality["f1"],
                    quality=quality["quality"],
                    cost=state.cost,
                    alpha=alpha,
                    confidence=state.confidence,  # type: ignore[arg-type]
                )
                bar.update(1)
    return tree


def shared_tree(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    items: Sequence[Item],
    cache: ReplyCache | None,
    memo: ScoreMemo,
    *,
    reward_metric: str = "task",
    alpha: float | None = None,
    live: bool = False,
    progress: bool = False,
) -> OutcomeTree:
    """``outcome_tree``, replayed once per ``memo``: asking again for the same replay-only tree
    (same pool, store, stage prompts, items and metric) at another α only reprices it.

    Why: an α sweep evaluates the same tree at every α; Q and C do not depend on α.
    """
    alpha = config.alpha if alpha is None else alpha
    key = (
        tuple(config.model_names),
        tuple(config.stage_prompt(stage) for stage in range(config.horizon)),
        tuple(item.id for item in items),
        reward_metric,
    )
    kept = memo.trees.get(key)
    if not live and kept is not None and kept[0] is pool and kept[1] is cache:
        return reprice(kept[2], alpha)
    tree = outcome_tree(
        config, pool, items, cache, reward_metric=reward_metric, alpha=alpha, live=live, memo=memo,
        progress=progress,
    )  # fmt: skip
    if not live:
        memo.trees[key] = (pool, cache, tree)
    return tree
