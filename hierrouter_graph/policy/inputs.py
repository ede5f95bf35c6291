"""The state a learned policy reads, as tensors: one definition for both policy kinds.

s_t = [frozen encoder(c_t) ⊕ stage embedding(ℓ_t) ⊕ C_t / cost_scale] (⊕ the last reply's
confidence features with ``uncertainty_state``) (⊕ log-scaled α with ``alpha_range``). Why apart
from the policies: ``RouterPolicy`` and ``DescriptorPolicy`` must read exactly the same state, and
the checks on its optional parts (the confidence's shape, α's presence) belong with it; α's
rules (range, tolerance) are ``alpha.py``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
from torch import nn

from hierrouter_graph.confidence import CONFIDENCE_FEATURES, Confidence, confidence_features

__all__ = [
    "LastConfidence",
    "StateShaped",
    "alpha_feature",
    "confidence_tensor",
    "orthogonal_layer",
    "state_features",
    "state_input_size",
]

LastConfidence = Confidence | Mapping[str, float] | None
"""The last reply's confidence as a policy receives it (a trace's dict, or None before a hop)."""


def alpha_feature(alphas: torch.Tensor, alpha_range: Sequence[float]) -> torch.Tensor:
    """log α mapped linearly onto [−1, 1] over ``alpha_range``: the policy's α input.

    Why log-scaled: the trade-offs worth telling apart span orders of magnitude (α = 0.01 and 0.1
    differ as much as 0.1 and 1), and a bounded input keeps the MLP's first layer well scaled.
    """
    lo, hi = (math.log(a) for a in alpha_range)
    return 2.0 * (torch.log(alphas.clamp_min(1e-30)) - lo) / (hi - lo) - 1.0


class StateShaped(Protocol):
    """What ``state_features`` reads of a policy."""

    horizon: int
    cost_scale: float
    uncertainty_state: bool
    alpha_range: tuple[float, float] | None
    stage_embedding: nn.Embedding


def state_input_size(
    embedding_dim: int, stage_dim: int, uncertainty_state: bool, alpha_input: bool = False
) -> int:
    """Width of ``state_features``: embedding ⊕ stage embedding ⊕ cost (⊕ confidence features)
    (⊕ log-scaled α)."""
    confidence = CONFIDENCE_FEATURES if uncertainty_state else 0
    return embedding_dim + stage_dim + 1 + confidence + int(alpha_input)


def state_features(
    policy: StateShaped,
    embeddings: torch.Tensor,
    stages: torch.Tensor,
    costs: torch.Tensor,
    confidences: torch.Tensor | None = None,
    alphas: torch.Tensor | None = None,
) -> torch.Tensor:
    """The state s_t as the policy MLPs read it (both policy kinds: one definition of the state).

    ``confidences`` [B, 3] only (and always) for a policy with ``uncertainty_state``; ``alphas``
    [B] (each state's cost weight) only (and always) for one with an ``alpha_range``.
    """
    if int(stages.max()) >= policy.horizon or int(stages.min()) < 0:
        raise ValueError(f"stage out of range [0, {policy.horizon - 1}]: {stages.tolist()}")
    cost_feature = (costs.to(embeddings.dtype) / policy.cost_scale).unsqueeze(-1)
    parts = [embeddings, policy.stage_embedding(stages.long()), cost_feature]
    if policy.uncertainty_state:
        if confidences is None or tuple(confidences.shape) != (len(stages), CONFIDENCE_FEATURES):
            got = None if confidences is None else tuple(confidences.shape)
            raise ValueError(
                "this policy reads the last reply's confidence: expected confidences of shape "
                f"[{len(stages)}, {CONFIDENCE_FEATURES}], got {got}"
            )
        parts.append(confidences.to(device=embeddings.device, dtype=embeddings.dtype))
    elif confidences is not None:
        raise ValueError("confidences given to a policy trained without uncertainty_state")
    if policy.alpha_range is not None:
        if alphas is None or tuple(alphas.shape) != (len(stages),):
            got = None if alphas is None else tuple(alphas.shape)
            raise ValueError(
                f"this policy is α-conditioned: expected alphas of shape [{len(stages)}], got {got}"
            )
        alpha = alphas.to(device=embeddings.device, dtype=embeddings.dtype)
        parts.append(alpha_feature(alpha, policy.alpha_range).unsqueeze(-1))
    elif alphas is not None:
        raise ValueError("alphas given to a policy trained at one fixed α (no alpha_range)")
    return torch.cat(parts, dim=-1)


def confidence_tensor(confidence: LastConfidence, device: torch.device | str = "cpu") -> torch.Tensor:
    """[1, 3] features of one last reply's confidence (neutral when None)."""
    return torch.tensor([confidence_features(confidence)], dtype=torch.float32, device=device)


def orthogonal_layer(inputs: int, outputs: int, std: float) -> nn.Linear:
    """CleanRL's orthogonal init: small actor head → near-uniform untrained policy."""
    layer = nn.Linear(inputs, outputs)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, 0.0)
    return layer
