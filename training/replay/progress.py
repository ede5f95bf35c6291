"""How far a recording has got: complete items per task at every horizon 1..L.

Why: a full outcome tree takes recorder-hours and is recorded a horizon at a time (``record.py
--horizon 1`` first, then the whole tree), in chunks, by several processes. What a user needs to
decide what to run next (or whether a result can be computed yet) is "which items can be replayed
without a miss at which depth" — exactly ``tree.complete_items``, counted per task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import ReplyCache
from hierrouter_graph.members.pool import PoolMember
from training.replay.tree import complete_items, with_horizon
from training.tasks.items import Item

__all__ = ["RecordProgress", "record_progress"]


@dataclass(frozen=True)
class RecordProgress:
    """Items per task (``wanted``) and how many of them are complete at each horizon."""

    wanted: dict[str, int]
    complete: dict[int, dict[str, int]]
    """horizon → task → complete items (every route of length 1..horizon recorded)."""

    def lines(self) -> list[str]:
        """One line per horizon: the total and each task's count, e.g. ``L=1: 180/420 (gsm8k 30/70, …)``."""
        total = sum(self.wanted.values())
        out = []
        for horizon, per_task in sorted(self.complete.items()):
            parts = ", ".join(f"{task} {per_task.get(task, 0)}/{n}" for task, n in self.wanted.items())
            out.append(f"L={horizon}: {sum(per_task.values())}/{total} items complete ({parts})")
        return out


def record_progress(
    config: RouterConfig, pool: Mapping[str, PoolMember], items: Sequence[Item], store: ReplyCache
) -> RecordProgress:
    """Complete items per task at each horizon 1..``config.horizon`` (a deeper tree is complete
    only where every shallower one is, so each horizon probes only the previous one's items)."""
    wanted = dict(Counter(item.task for item in items))
    complete: dict[int, dict[str, int]] = {}
    remaining = list(items)
    for horizon in range(1, config.horizon + 1):
        remaining = complete_items(with_horizon(config, horizon), pool, remaining, store)
        complete[horizon] = dict(Counter(item.task for item in remaining))
    return RecordProgress(wanted, complete)
