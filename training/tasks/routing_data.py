"""The router's items: the routing half of the benchmarks split train/test, or a user's JSONL file.

Why a module of its own: which items the router trains on and which it is tested on must be the
same in every command (recording, PPO, evaluation, tuning), and a test item must never become a
training item when more items are drawn; ``build_routing_dataset`` and ``load_items`` decide it.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.tasks.benchmarks import load_routing_items
from training.tasks.items import ALL_TASKS, DEFAULT_PER_TASK, Item
from training.tasks.jsonl_datasets import load_jsonl_dataset

__all__ = ["RoutingDataset", "build_routing_dataset", "load_items"]


@dataclass(frozen=True)
class RoutingDataset:
    """The router's own data: disjoint train/test lists drawn from the routing half only."""

    train: list[Item]
    test: list[Item]

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per task (train, test) sizes, handy for logs and sanity checks."""
        out: dict[str, tuple[int, int]] = {}
        for task in sorted({it.task for it in [*self.train, *self.test]}):
            out[task] = (
                sum(it.task == task for it in self.train),
                sum(it.task == task for it in self.test),
            )
        return out


def _is_test_position(position: int, test_fraction: float) -> bool:
    return math.floor((position + 1) * test_fraction) > math.floor(position * test_fraction)


def build_routing_dataset(
    tasks: Iterable[str] = ALL_TASKS,
    per_task: int = 300,
    seed: int = 42,
    test_fraction: float = 0.3,
) -> RoutingDataset:
    """Sample ``per_task`` routing-half items per task and split them train/test.

    A task with fewer routing items than ``per_task`` (MBPP: ~250) contributes all of them.
    The split is stratified per task and interleaved by sample position (position i is a test
    item when floor((i+1)·f) > floor(i·f), so 3 of every 10 at f = 0.3). ``random.sample`` draws
    are prefix-stable, so a larger ``per_task`` only ADDS items: the train and test splits of
    per_task=100 are subsets of those of per_task=300, and a recorded outcome tree grows without
    a test item ever becoming a training item. Each task draws from its own RNG seeded by
    ``f"{seed}:{task}"``, so adding or removing a task never changes another task's sample.
    """
    if per_task <= 0:
        raise ValueError(f"per_task must be positive, got {per_task}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    train: list[Item] = []
    test: list[Item] = []
    for task in dict.fromkeys(tasks):
        pool = sorted(load_routing_items(task), key=lambda it: it.id)
        rng = random.Random(f"{seed}:{task}")
        sample = rng.sample(pool, min(per_task, len(pool)))
        for position, item in enumerate(sample):
            (test if _is_test_position(position, test_fraction) else train).append(item)
    random.Random(f"{seed}:train").shuffle(train)
    random.Random(f"{seed}:test").shuffle(test)
    return RoutingDataset(train=train, test=test)


def load_items(
    *,
    items_path: str | os.PathLike[str] | None = None,
    tasks: Sequence[str] = ALL_TASKS,
    per_task: int = DEFAULT_PER_TASK,
    data_seed: int = 42,
) -> tuple[list[Item], dict[str, Any]]:
    """The router's training items and a description of them for the policy's metadata.

    Benchmarks: the *train* split of ``build_routing_dataset`` (the test split is for evaluation).
    A JSONL dataset: all its items (the user decides what to train on).
    """
    if items_path is not None:
        items = load_jsonl_dataset(Path(items_path))
        info: dict[str, Any] = {"source": "jsonl", "path": str(items_path)}
    else:
        data = build_routing_dataset(tasks, per_task=per_task, seed=data_seed)
        items = data.train
        info = {
            "source": "benchmarks",
            "split": "train",
            "tasks": list(tasks),
            "per_task": per_task,
            "data_seed": data_seed,
            "counts": {task: list(pair) for task, pair in data.counts().items()},
        }
    info["items"] = len(items)
    info["tasks_present"] = sorted({item.task for item in items})
    return items, info
