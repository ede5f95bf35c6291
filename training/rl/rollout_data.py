"""The data a PPO iteration moves: states as the policy reads them, episode summaries, log rows.

Why apart from ``ppo.py``: the algorithm file should read like CleanRL's (arguments, rollout, GAE,
update, loop). How an observation becomes policy inputs (embedding, stage, cost, the optional
confidence and α), how a finished episode is summarised and what the per-iteration log holds are
bookkeeping around it; keeping them here lets ``ppo.py`` say only what PPO does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["LOG_COLUMNS", "EpisodeSummary", "PolicyInputs", "StateBatch", "log_row"]

Tensor = torch.Tensor
PolicyInputs = tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]
"""(embeddings, stages, costs, confidences, alphas): the policy's ``forward`` arguments."""

LOG_COLUMNS: tuple[str, ...] = (
    "iteration",
    "episodes",
    "mean_return",
    "mean_quality",
    "mean_task_metric",
    "mean_f1",
    "mean_cost",
    "mean_hops",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clipfrac",
    "wall_seconds",
)
"""Columns of ``run_dir/log.csv``: one row per iteration; ``episodes`` is the running total;
``mean_hops`` is the mean number of model calls per episode (below L only when the router STOPs)."""


@dataclass
class StateBatch:
    """B states as the policy's ``forward`` takes them (the optional inputs only where the env
    observes them: ``confidences`` with ``uncertainty_state``, ``alphas`` with ``alpha_range``)."""

    embeddings: torch.Tensor  # [B, D] float32
    stages: torch.Tensor  # [B] long
    costs: torch.Tensor  # [B] float32, the raw cumulative cost C_t (the policy scales it)
    confidences: torch.Tensor | None = None  # [B, 3] float32
    alphas: torch.Tensor | None = None  # [B] float32, each state's episode α

    @classmethod
    def of(cls, observations: Sequence[Mapping[str, Any]]) -> StateBatch:
        """Stack env observations ({"embedding", "stage", "cost"[, "confidence"][, "alpha"]})."""

        def floats(key: str) -> torch.Tensor:
            return torch.as_tensor(np.stack([np.asarray(o[key], dtype=np.float32) for o in observations]))

        first = observations[0]
        return cls(
            embeddings=floats("embedding"),
            stages=torch.tensor([int(o["stage"]) for o in observations], dtype=torch.long),
            costs=floats("cost").reshape(len(observations)),
            confidences=floats("confidence") if "confidence" in first else None,
            alphas=floats("alpha").reshape(len(observations)) if "alpha" in first else None,
        )

    @staticmethod
    def cat(batches: Sequence[StateBatch]) -> StateBatch:
        def joined(name: str) -> torch.Tensor | None:
            parts = [getattr(b, name) for b in batches]
            return None if parts[0] is None else torch.cat(parts)

        return StateBatch(
            torch.cat([b.embeddings for b in batches]),
            torch.cat([b.stages for b in batches]),
            torch.cat([b.costs for b in batches]),
            joined("confidences"),
            joined("alphas"),
        )

    def __getitem__(self, index: torch.Tensor | slice) -> StateBatch:
        return StateBatch(
            self.embeddings[index],
            self.stages[index],
            self.costs[index],
            None if self.confidences is None else self.confidences[index],
            None if self.alphas is None else self.alphas[index],
        )

    def __len__(self) -> int:
        return len(self.stages)

    def to(self, device: str | torch.device) -> StateBatch:
        return StateBatch(
            self.embeddings.to(device),
            self.stages.to(device),
            self.costs.to(device),
            None if self.confidences is None else self.confidences.to(device),
            None if self.alphas is None else self.alphas.to(device),
        )

    def inputs(self) -> PolicyInputs:
        """The positional arguments of the policy's ``forward``."""
        return self.embeddings, self.stages, self.costs, self.confidences, self.alphas


@dataclass
class EpisodeSummary:
    """What one finished episode reports: the numbers the log averages, and its route."""

    item_id: str
    task: str
    route: list[str]
    episode_return: float
    quality: float
    task_metric: float
    f1: float
    cost: float

    @property
    def hops(self) -> int:
        """Model calls in the episode (the route's length; < L when the router chose STOP)."""
        return len(self.route)

    @classmethod
    def of(cls, info: Mapping[str, Any], episode_return: float) -> EpisodeSummary:
        """From the env's final ``info`` (a field it does not report is NaN)."""
        nan = float("nan")
        return cls(
            item_id=str(info.get("item_id", "")),
            task=str(info.get("task", "")),
            route=list(info.get("route", [])),
            episode_return=episode_return,
            quality=float(info.get("quality", nan)),
            task_metric=float(info.get("task_metric", nan)),
            f1=float(info.get("f1", nan)),
            cost=float(info.get("total_cost", info.get("cost", nan))),
        )


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def log_row(
    iteration: int,
    episodes_so_far: int,
    episodes: Sequence[EpisodeSummary],
    stats: Mapping[str, float],
    seconds: float,
) -> dict[str, float]:
    """One ``LOG_COLUMNS`` row: the iteration's episode means and update statistics."""
    return {
        "iteration": iteration,
        "episodes": episodes_so_far,
        "mean_return": _mean([e.episode_return for e in episodes]),
        "mean_quality": _mean([e.quality for e in episodes]),
        "mean_task_metric": _mean([e.task_metric for e in episodes]),
        "mean_f1": _mean([e.f1 for e in episodes]),
        "mean_cost": _mean([e.cost for e in episodes]),
        "mean_hops": _mean([float(e.hops) for e in episodes]),
        **stats,
        "wall_seconds": seconds,
    }
