"""The reward R = Q(c_L) − α·C_L: the ONE place it is computed.

The environment, PPO, evaluation and the outcome-tree tools all call these functions, so a router
is trained, evaluated and compared on exactly the same number.

Q is computed on the route's *answer* — its last reply that did not decline (``hop.answer_text``,
the same text the graph returns) — never on the context: the query of a multiple-choice item
contains every option and a reading-comprehension query contains the passage, so scoring the whole
context would match the gold text against the question itself and reward a route for nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypedDict, cast

from training.tasks.items import Item
from training.tasks.metrics import RewardMetric, ScorableItem, evaluate_reply

__all__ = [
    "REWARD_METRICS",
    "EpisodeQuality",
    "ScoreMemo",
    "episode_quality",
    "reward_metric_of",
    "terminal_reward",
]


class EpisodeQuality(TypedDict):
    """``quality`` is the metric the reward uses; both metrics are always reported."""

    quality: float
    task_metric: float
    f1: float


REWARD_METRICS: tuple[RewardMetric, ...] = ("task", "f1")
"""The qualities a reward can use: the item's own task metric, or the paper's token-F1."""


def reward_metric_of(value: str, name: str = "reward_metric") -> RewardMetric:
    """``value`` as a ``RewardMetric``; every caller that takes a metric name checks it here.

    Raises:
        ValueError: naming ``name`` (the caller's field) and the metrics allowed.
    """
    if value not in REWARD_METRICS:
        raise ValueError(f"{name} must be 'task' or 'f1', got {value!r}")
    return cast(RewardMetric, value)


def terminal_reward(quality: float, total_cost: float, alpha: float) -> float:
    """R = Q(c_L) − α·C_L (paper §3.1); the reward of every non-terminal step is 0."""
    return quality - alpha * total_cost


def episode_quality(item: ScorableItem, answer: str, reward_metric: RewardMetric = "task") -> EpisodeQuality:
    """Both quality numbers of a finished episode's ``answer`` (``RouteState.answer``), and the one
    the reward uses.

    ``reward_metric="task"`` rewards the item's own metric (letter accuracy, exact number, tests
    passing); ``"f1"`` reproduces the paper's token-F1 reward.
    """
    reward_metric = reward_metric_of(reward_metric)
    report = evaluate_reply(item, answer)
    chosen = report["task_metric"] if reward_metric == "task" else report["f1"]
    return EpisodeQuality(quality=float(chosen), task_metric=report["task_metric"], f1=report["f1"])


class ScoreMemo:
    """Scores keyed by (item id, answer text, reward metric).

    Why: MBPP runs code in a sandbox, and identical replies recur across routes, episodes, the
    train and test trees and α sweeps; each distinct answer is scored once. Q depends on neither α
    nor L, so one memo serves every setting. ``trees`` keeps the replay-only outcome trees scored
    with it (``training.replay.tree.outcome_tree``), so an α sweep replays each tree once.
    """

    def __init__(self) -> None:
        self._scores: dict[tuple[str, str, str], EpisodeQuality] = {}
        self.hits = 0
        self.trees: dict[tuple[object, ...], Any] = {}

    def __len__(self) -> int:
        return len(self._scores)

    def score(self, item: Item, answer: str, reward_metric: str) -> EpisodeQuality:
        """Q of ``answer`` (``RouteState.answer``) for ``item``, scored once per distinct text."""
        key = (item.id, answer, reward_metric)
        found = self._scores.get(key)
        if found is not None:
            self.hits += 1
            return found
        metric = reward_metric_of(reward_metric)
        self._scores[key] = episode_quality(item, answer, metric)
        return self._scores[key]

    def score_all(
        self, pairs: Sequence[tuple[Item, str]], reward_metric: str, *, workers: int | None = None
    ) -> list[EpisodeQuality]:
        """``score`` of every (item, answer) pair, the distinct unscored ones ``workers`` at a time.

        Why: scoring an MBPP reply is a sandboxed subprocess (~70 ms, mostly process start-up), and
        an outcome tree holds hundreds of distinct code answers; two at once on 2 cores nearly halve
        the wall time (measured: 40 programs 2.9 s one by one, 1.7 s two at once). ``workers``
        defaults to the machine's CPU count.
        """
        metric = reward_metric_of(reward_metric)
        todo: dict[tuple[str, str, str], tuple[Item, str]] = {}
        for item, answer in pairs:
            key = (item.id, answer, reward_metric)
            if key not in self._scores:
                todo.setdefault(key, (item, answer))
        workers = min(workers or os.cpu_count() or 1, len(todo))
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                scored = list(pool.map(lambda pair: episode_quality(pair[0], pair[1], metric), todo.values()))
        else:
            scored = [episode_quality(item, answer, metric) for item, answer in todo.values()]
        self._scores.update(zip(todo, scored, strict=True))
        self.hits += len(pairs) - len(todo)
        return [self._scores[(item.id, answer, reward_metric)] for item, answer in pairs]
