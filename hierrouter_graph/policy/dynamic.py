"""A router whose pool can change after training: it scores (state, model descriptor) pairs.

Why a second policy: ``RouterPolicy`` ends in a linear head with one output per pool member, so its
weights ARE the pool — adding, removing or reordering a model means retraining. ``DescriptorPolicy``
never sees a pool index. Each member m is described by a vector d_m built from its ``ModelSpec``
(a model-card text embedded by the same frozen sentence encoder as the context, its log price and
log size); a shared scorer maps (state, d_m) to one logit, so the number of logits is simply the
number of members passed in — now or at load time — and the weights do not change.

What d_m is made of (``ModelDescriptor``, ``describe``):

- **card**: ``"<kind phrase>. <description>"`` when ``ModelSpec.description`` is set, else
  ``"<kind phrase>. <name> (<source>)"``. The kind phrase says what the member can do at all
  (``KIND_PHRASES``: a generator, or a multiple-choice scorer that only answers with a letter). The
  name is used only as a fallback: it is a graph node label, so renaming a described member must
  not change its routing, and two members with the same card, price and size get the same logit.
- **log price**: ln(base_rate / 0.001), i.e. the price in "billions of parameters" of the paper's
  0.001-per-B heuristic (``hierrouter_graph.cost``).
- **log size**: ln(parameters / 1e9), from the size written in the name or source ("135M", "3B");
  when neither says, derived from base_rate with the same heuristic. A member with neither a
  base_rate nor a size in its name/source cannot be described and raises.

The logit of m is ``scorer([h, e_m, h ⊙ e_m, cos(embedding(c_t), card_m)])`` with h the state
features (the RouterPolicy trunk: encoder ⊕ stage ⊕ cost) and e_m = descriptor_net(d_m); the value
is ``critic(h)``; with ``allow_stop`` a state-only head adds the STOP logit last (masked at stage 0,
as in RouterPolicy). The cosine term is a zero-shot hook: it lets "this query looks like what this
card describes" matter for a member never seen in training. Whether a new member is scored well is
an empirical question — see docs/results.md, "Dynamic pool".
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.cost import RATE_PER_BILLION_PARAMS, base_rate_from_param_count, param_count_from_name
from hierrouter_graph.model_spec import ModelSpec
from hierrouter_graph.policy.encoder import SentenceEncoder
from hierrouter_graph.policy.inputs import orthogonal_layer
from hierrouter_graph.policy.router import RouterPolicy
from hierrouter_graph.policy.signature import PolicyMismatchError, PolicySignature
from hierrouter_graph.policy.trained import MLP_KIND, TrainedPolicy, read_policy_meta

__all__ = [
    "DESCRIPTOR_FORMAT_VERSION",
    "DESCRIPTOR_KIND",
    "KIND_PHRASES",
    "TRAINED_POLICY_KINDS",
    "DescriptorPolicy",
    "ModelDescriptor",
    "PoolEntry",
    "SentenceEncoder",
    "describe",
    "load_saved_policy",
    "saved_policy_kind",
]

DESCRIPTOR_FORMAT_VERSION = 1
DESCRIPTOR_KIND = "descriptor"
"""``policy.json``'s ``kind`` for this policy (a file without ``kind`` is a ``RouterPolicy``)."""

_META = "policy.json"
_DESCRIPTOR_FIELDS: dict[str, type] = {
    "descriptors": list,
    "hidden_size": int,
    "stage_dim": int,
    "cost_scale": float,
}
_LOG_FLOOR = 1e-4
"""Smallest price/size (in B-params) the log features see: a free member (base_rate 0) stays finite."""

KIND_PHRASES: dict[str, str] = {
    "generate": "Chat model that writes a free-text reply",
    "cloze_mc": "Multiple-choice scorer that answers a question with lettered options by picking one "
    "option letter; it cannot write free text",
    "program": "Program-aided model that writes a Python program, runs it and answers with what "
    "the program printed",
}
"""What each ``ModelSpec.kind`` can do, in words, at the head of every model card."""


@dataclass(frozen=True)
class ModelDescriptor:
    """The policy's whole view of one pool member (``describe`` builds it from a ``ModelSpec``)."""

    name: str
    card: str
    base_rate: float
    n_params: int

    @property
    def numeric(self) -> tuple[float, float]:
        """(ln price in B-params, ln size in B-params): the two non-text descriptor features."""
        price = max(self.base_rate / RATE_PER_BILLION_PARAMS, _LOG_FLOOR)
        return math.log(price), math.log(max(self.n_params / 1e9, _LOG_FLOOR))


def describe(spec: ModelSpec | ModelDescriptor) -> ModelDescriptor:
    """The descriptor of ``spec`` (module docstring); a descriptor is returned as is."""
    if isinstance(spec, ModelDescriptor):
        return spec
    phrase = KIND_PHRASES.get(spec.kind, spec.kind)
    body = spec.description.strip() or f"{spec.name} ({spec.source})"
    params = param_count_from_name(spec.name) or param_count_from_name(spec.source)
    if spec.base_rate is None and params is None:
        raise ValueError(
            f"models[{spec.name}]: a DescriptorPolicy describes members by price and size; set "
            "base_rate, or name a size in its name/source (e.g. 'SmolLM2-135M')"
        )
    rate = spec.base_rate if spec.base_rate is not None else base_rate_from_param_count(int(params or 0))
    if params is None:
        params = max(int(rate / RATE_PER_BILLION_PARAMS * 1e9), 1)
    return ModelDescriptor(spec.name, f"{phrase}. {body}", float(rate), int(params))


PoolEntry = ModelSpec | ModelDescriptor | str
"""A member for ``with_pool``/``load``: a spec, a ready descriptor, or the name of a member the
policy already describes (e.g. one of its training pool when loading)."""


class DescriptorPolicy(TrainedPolicy):
    """Actor-critic over a pool given at call time: logits_m = f(state, d_m), value = g(state).

    Same ``forward(embeddings, stages, costs) -> (logits [B, A], value [B])`` as ``RouterPolicy``
    (A = current pool size, +1 with ``allow_stop``), so ``training/ppo.py`` trains it unchanged, and
    the same ``pool`` / ``decide`` as ``RoutingPolicy``, so the graph routes with it unchanged.
    ``with_pool`` gives a copy with the same weights over another pool; ``load(..., pool=...)``
    loads it over any pool.
    """

    KIND = DESCRIPTOR_KIND
    FORMAT_VERSION = DESCRIPTOR_FORMAT_VERSION
    FIXED_POOL = False
    META_FIELDS = _DESCRIPTOR_FIELDS

    def __init__(self, pool: Sequence[ModelSpec | ModelDescriptor], **shape: Any) -> None:
        """``shape``: ``TrainedPolicy``'s keyword arguments (encoder_name, embedding_dim, horizon, ...)."""
        super().__init__(**shape)
        hidden_size, embedding_dim = self.hidden_size, self.embedding_dim
        self.descriptor_net = nn.Sequential(
            orthogonal_layer(embedding_dim + 2, hidden_size, math.sqrt(2)),
            nn.Tanh(),
            orthogonal_layer(hidden_size, hidden_size, math.sqrt(2)),
            nn.Tanh(),
        )
        self.scorer = nn.Sequential(
            orthogonal_layer(3 * hidden_size + 1, hidden_size, math.sqrt(2)),
            nn.Tanh(),
            orthogonal_layer(hidden_size, 1, 0.01),
        )
        self.stop_head = orthogonal_layer(hidden_size, 1, 0.01) if self.allow_stop else None
        self.critic = orthogonal_layer(hidden_size, 1, 1.0)
        self._descriptors: list[ModelDescriptor] = []
        self._cards: torch.Tensor | None = None  # [M, D] card embeddings, computed on first use
        self._set_pool(pool)

    # ------------------------------------------------------------------------------ the pool

    def _set_pool(self, pool: Sequence[ModelSpec | ModelDescriptor]) -> None:
        descriptors = [describe(member) for member in pool]
        names = [d.name for d in descriptors]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"pool must hold unique model names, got {names}")
        self._descriptors = descriptors
        self._cards = None

    @property
    def pool(self) -> list[str]:
        return [d.name for d in self._descriptors]

    @property
    def descriptors(self) -> list[ModelDescriptor]:
        return list(self._descriptors)

    def _resolve(self, pool: Sequence[PoolEntry]) -> list[ModelDescriptor]:
        known = {d.name: d for d in self._descriptors}
        out = []
        for member in pool:
            if isinstance(member, str):
                if member not in known:
                    raise PolicyMismatchError(
                        f"no descriptor for {member!r}: pass its ModelSpec (the policy describes "
                        f"{list(known)})"
                    )
                out.append(known[member])
            else:
                out.append(describe(member))
        return out

    def with_pool(self, pool: Sequence[PoolEntry]) -> DescriptorPolicy:
        """A copy routing over ``pool`` with the same weights (copied, so training one leaves the
        other alone); members may be added, removed or reordered freely."""
        twin = DescriptorPolicy(self._resolve(pool), **self.shape())
        twin.load_state_dict(self.state_dict())
        twin.to(next(self.parameters()).device)
        twin.train(self.training)
        return twin

    def for_config(self, config: RouterConfig) -> DescriptorPolicy:
        """This policy over ``config``'s pool (itself when already so), after checking what cannot
        change without retraining: encoder, horizon, allow_stop, uncertainty_state and alpha_range."""
        PolicySignature.from_config(config, pool=False).check(PolicySignature.of(self))
        wanted = [describe(spec) for spec in config.models]
        return self if wanted == self._descriptors else self.with_pool(wanted)

    # ------------------------------------------------------------------------------ encoding

    def descriptor_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(card embeddings [M, D], descriptor inputs [M, D + 2]) of the current pool (CPU)."""
        if self._cards is None:
            cards = self.encoder.encode([d.card for d in self._descriptors])
            self._cards = cards.detach().clone().to(torch.float32)  # a normal tensor, never an inference one
        numeric = torch.tensor([d.numeric for d in self._descriptors], dtype=torch.float32)
        return self._cards, torch.cat([self._cards, numeric], dim=-1)

    def member_logits(self, hidden: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """One shared scorer per (state, member) pair, then the state-only STOP head."""
        cards, inputs = (t.to(device=hidden.device, dtype=hidden.dtype) for t in self.descriptor_features())
        members = self.descriptor_net(inputs)  # [M, H]
        batch, size = hidden.shape[0], members.shape[0]
        h = hidden.unsqueeze(1).expand(batch, size, -1)
        e = members.unsqueeze(0).expand(batch, size, -1)
        similarity = (embeddings.to(hidden.dtype) @ cards.T).unsqueeze(-1)  # [B, M, 1]
        logits = self.scorer(torch.cat([h, e, h * e, similarity], dim=-1)).squeeze(-1)  # [B, M]
        if self.stop_head is not None:
            logits = torch.cat([logits, self.stop_head(hidden)], dim=-1)
        return logits

    def metadata_head(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "format_version": DESCRIPTOR_FORMAT_VERSION,
            "pool": self.pool,
            "descriptors": [asdict(d) for d in self._descriptors],
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], encoder: SentenceEncoder | str | None) -> DescriptorPolicy:
        """Unlike ``RouterPolicy``, ``load`` gives it any pool — that is the point; the encoder, horizon,
        allow_stop, uncertainty_state and alpha_range are still checked (they shape the weights)."""
        return cls([ModelDescriptor(**d) for d in meta["descriptors"]], **cls.shape_from_meta(meta, encoder))

    def set_pool(self, pool: Sequence[PoolEntry]) -> None:
        self._set_pool(self._resolve(pool))

    @classmethod
    def pool_of(cls, config: RouterConfig) -> list[ModelSpec]:
        return list(config.models)


TRAINED_POLICY_KINDS: dict[str, type[TrainedPolicy]] = {
    policy.KIND: policy for policy in (RouterPolicy, DescriptorPolicy)
}
"""THE registry of trained policy kinds: the name (``policy.json``'s ``kind``, ``PPOArgs.policy_kind``,
``--policy-kind``) → the class that builds and loads it. A new kind is one more class here."""


def saved_policy_kind(directory: str | os.PathLike[str]) -> str:
    """A saved policy's kind in ``TRAINED_POLICY_KINDS`` (a ``RouterPolicy``'s files carry no
    ``kind``: ``MLP_KIND``)."""
    return str(read_policy_meta(Path(directory)).get("kind", MLP_KIND))


def load_saved_policy(
    directory: str | os.PathLike[str],
    config: RouterConfig,
    encoder: SentenceEncoder | None = None,
) -> TrainedPolicy:
    """A saved policy of any kind (``TRAINED_POLICY_KINDS``), ready for ``config``.

    A ``RouterPolicy`` must match the config's pool exactly; a ``DescriptorPolicy`` is given the
    config's pool (descriptors from its ModelSpecs), whatever pool it was trained on.
    """
    kind = saved_policy_kind(directory)
    policy = TRAINED_POLICY_KINDS.get(kind)
    if policy is None:
        raise PolicyMismatchError(
            f"{Path(directory) / _META}: unknown policy kind {kind!r}; "
            f"expected one of {list(TRAINED_POLICY_KINDS)}"
        )
    return policy.load_for(directory, config, encoder)
