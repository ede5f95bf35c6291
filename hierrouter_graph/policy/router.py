"""The HierRouter actor-critic ``RouterPolicy``: ``TrainedPolicy``'s MLP with one logit per member.

Its output layer IS the pool — one logit per member in action order (+ STOP) — so a saved policy
only routes the pool it was trained on (``TrainedPolicy.load_for`` checks it); a pool that changes
after training needs ``dynamic.DescriptorPolicy`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from hierrouter_graph.policy.encoder import SentenceEncoder
from hierrouter_graph.policy.inputs import orthogonal_layer
from hierrouter_graph.policy.trained import MLP_KIND, POLICY_FORMAT_VERSION, TrainedPolicy

__all__ = ["RouterPolicy"]

# Fields a RouterPolicy's policy.json needs beyond the common ones (read_policy_json checks those).
_MLP_FIELDS: dict[str, type] = {"hidden_size": int, "stage_dim": int, "cost_scale": float}


class RouterPolicy(TrainedPolicy):
    """The HierRouter actor-critic: one logit per pool member (its weights ARE the pool)."""

    KIND: ClassVar[str] = MLP_KIND
    META_FIELDS: ClassVar[Mapping[str, type]] = _MLP_FIELDS

    def __init__(self, pool: Sequence[str], **shape: Any) -> None:
        """``shape``: ``TrainedPolicy``'s keyword arguments (encoder_name, embedding_dim, horizon, ...)."""
        if len(pool) < 1 or len(set(pool)) != len(pool):
            raise ValueError(f"pool must hold unique model names, got {list(pool)}")
        super().__init__(**shape)
        self._pool = list(pool)
        self.actor = orthogonal_layer(self.hidden_size, len(self.actions), 0.01)
        self.critic = orthogonal_layer(self.hidden_size, 1, 1.0)

    @property
    def pool(self) -> list[str]:
        return list(self._pool)

    def member_logits(self, hidden: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return self.actor(hidden)  # one output per member (+ STOP): the weights are the pool

    def metadata_head(self) -> dict[str, Any]:
        return {"format_version": POLICY_FORMAT_VERSION, "pool": self.pool}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], encoder: SentenceEncoder | str | None) -> RouterPolicy:
        return cls(meta["pool"], **cls.shape_from_meta(meta, encoder))

    @classmethod
    def pool_of(cls, config: Any) -> list[str]:
        return list(config.model_names)
