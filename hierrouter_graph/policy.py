"""Router policies: the PPO actor-critic ``RouterPolicy`` and the ``FixedRoutePolicy`` baseline.

State s_t = (c_t, ℓ_t, C_t) → [frozen encoder(c_t) ⊕ stage embedding(ℓ_t) ⊕ C_t / cost_scale] →
two-layer MLP → (logits over the pool, value). With ``uncertainty_state`` (as ``RouterConfig``)
the input also holds the last reply's confidence features (``confidence.py``: mean token log-prob,
mean entropy, known flag; neutral zeros before the first hop). With ``alpha_range``
(``RouterConfig.alpha_range``) it also holds the cost weight α, log-scaled onto [−1, 1] over the
range: one policy then serves every trade-off in the range, chosen per query at inference.
Weights are saved as safetensors next to a JSON file naming the pool (in action order), the
encoder and L: a policy loaded against another pool or encoder raises instead of silently sending
queries to the wrong model.

With ``allow_stop`` the action space gains one last action, ``STOP_ACTION`` (the paper's Appendix A
done flag): the router may end before L hops. STOP is masked at stage 0 inside ``forward`` — the
one place logits are made — so sampling, greedy decisions and PPO's log-probs all see the same
distribution and an answer-less episode is impossible.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import torch
from torch import nn

from .confidence import CONFIDENCE_FEATURES, Confidence, confidence_features
from .encoder import SentenceEncoder, TextEncoder, load_encoder
from .loading_errors import require_fields
from .policy_files import load_weights_into, read_policy_json, save_policy_folder

__all__ = [
    "POLICY_FORMAT_VERSION",
    "STOP_ACTION",
    "Decision",
    "FixedRoutePolicy",
    "PolicyMismatchError",
    "PolicySignature",
    "RouterPolicy",
    "RoutingPolicy",
    "TrainedPolicy",
    "alpha_feature",
    "check_alpha",
    "check_stop_allowed",
    "confidence_tensor",
    "decision_from",
    "state_features",
    "state_input_size",
]

POLICY_FORMAT_VERSION = 1
_META = "policy.json"
# Fields a RouterPolicy's policy.json needs beyond the common ones (read_policy_json checks those).
_MLP_FIELDS: dict[str, type] = {"hidden_size": int, "stage_dim": int, "cost_scale": float}

STOP_ACTION = "<stop>"
"""The label of the STOP decision. Not a valid model name (they start with a letter or digit), so it
can never collide with a pool member."""

_MASKED_LOGIT = -1e9
"""Logit of a forbidden action: exp() underflows to exactly 0 probability, yet (unlike -inf) the
entropy and log-softmax stay finite, so PPO's loss never sees NaN."""


class PolicyMismatchError(ValueError):
    """A saved policy does not match the pool or encoder it is being used with."""


def check_stop_allowed(stage: int, allow_stop: bool) -> None:
    """Refuse a STOP decision the config does not allow or that comes before the first hop.

    Why a check outside the policy too: ``RouterPolicy`` masks STOP at stage 0, but the graph and
    the evaluation accept any ``RoutingPolicy``; an empty answer, or a STOP the config never asked
    for, must fail loudly wherever a decision is consumed.
    """
    if not allow_stop:
        raise PolicyMismatchError("the policy chose STOP but the config has allow_stop=False")
    if stage == 0:
        raise PolicyMismatchError("the policy chose STOP before the first hop (the answer would be empty)")


class Unchecked:
    """The type of ``UNCHECKED``: a loader argument left unchecked where None is a real value."""


UNCHECKED = Unchecked()


def _range_tuple(alpha_range: Sequence[float] | None) -> tuple[float, ...]:
    """``()`` for a fixed-α policy or config, else (lo, hi) as floats."""
    return () if alpha_range is None else tuple(float(a) for a in alpha_range)


def _range_text(alpha_range: tuple[float, ...] | None) -> str:
    return "null (one fixed α)" if not alpha_range else f"[{alpha_range[0]:g}, {alpha_range[1]:g}]"


def saved_uncertainty(meta: Mapping[str, Any]) -> bool:
    """A ``policy.json``'s confidence-input flag: ``uncertainty_state`` (as the config names it), or
    ``uncertainty`` in files written before the two names were made one."""
    return bool(meta.get("uncertainty_state", meta.get("uncertainty", False)))


def check_alpha(alpha: float | None, alpha_range: Sequence[float]) -> float:
    """α for an α-conditioned policy: given, and inside the range it was trained on (the policy
    never saw a trade-off outside it, so a value there would be a guess, not a decision)."""
    lo, hi = alpha_range
    if alpha is None:
        raise ValueError(
            f"this policy is α-conditioned (trained for alpha in [{lo:g}, {hi:g}]): pass alpha="
        )
    if not math.isfinite(alpha) or not lo * (1 - 1e-9) <= alpha <= hi * (1 + 1e-9):
        raise ValueError(f"alpha={alpha!r} is outside the range [{lo:g}, {hi:g}] this policy was trained for")
    return float(alpha)


def alpha_feature(alphas: torch.Tensor, alpha_range: Sequence[float]) -> torch.Tensor:
    """log α mapped linearly onto [−1, 1] over ``alpha_range``: the policy's α input.

    Why log-scaled: the trade-offs worth telling apart span orders of magnitude (α = 0.01 and 0.1
    differ as much as 0.1 and 1), and a bounded input keeps the MLP's first layer well scaled.
    """
    lo, hi = (math.log(a) for a in alpha_range)
    return 2.0 * (torch.log(alphas.clamp_min(1e-30)) - lo) / (hi - lo) - 1.0


@dataclass(frozen=True)
class PolicySignature:
    """What a policy's weights are shaped by (encoder, L, STOP, confidence input) and the pool it
    routes over; ``None`` = not checked. ONE check for every place a policy meets a config.

    ``PolicySignature.from_config(config).check(PolicySignature.of(policy))`` (or ``.from_meta`` of a
    saved ``policy.json``) raises ``PolicyMismatchError`` naming the first field that differs.
    """

    pool: tuple[str, ...] | None = None
    encoder: str | None = None
    horizon: int | None = None
    allow_stop: bool | None = None
    uncertainty_state: bool | None = None
    alpha_range: tuple[float, ...] | None = None
    """(lo, hi) of an α-conditioned policy, ``()`` for one trained at a fixed α."""

    @classmethod
    def from_config(cls, config: Any, *, pool: bool = True, encoder: bool = True) -> PolicySignature:
        """What ``config`` needs (``pool=False``: any pool, as a descriptor policy allows)."""
        return cls(
            pool=tuple(config.model_names) if pool else None,
            encoder=config.encoder if encoder else None,
            horizon=config.horizon,
            allow_stop=config.allow_stop,
            uncertainty_state=config.uncertainty_state,
            alpha_range=_range_tuple(config.alpha_range),
        )

    @classmethod
    def of(cls, policy: Any) -> PolicySignature:
        """What a policy object is (attributes it lacks are not checked)."""
        pool = getattr(policy, "pool", None)
        return cls(
            pool=None if pool is None else tuple(pool),
            encoder=getattr(policy, "encoder_name", None),
            horizon=getattr(policy, "horizon", None),
            allow_stop=getattr(policy, "allow_stop", None),
            uncertainty_state=getattr(policy, "uncertainty_state", None),
            alpha_range=_range_tuple(getattr(policy, "alpha_range", None)),
        )

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> PolicySignature:
        """What a saved ``policy.json`` is; files written before ``allow_stop``,
        ``uncertainty_state`` (once ``uncertainty``) or ``alpha_range`` existed lack them."""
        return cls(
            pool=tuple(meta["pool"]),
            encoder=meta["encoder"]["name"],
            horizon=meta["horizon"],
            allow_stop=bool(meta.get("allow_stop", False)),
            uncertainty_state=saved_uncertainty(meta),
            alpha_range=_range_tuple(meta.get("alpha_range")),
        )

    @classmethod
    def wanted(
        cls,
        *,
        pool: Sequence[str] | None = None,
        encoder: Any = None,
        horizon: int | None = None,
        allow_stop: bool | None = None,
        uncertainty_state: bool | None = None,
        alpha_range: Sequence[float] | Unchecked | None = UNCHECKED,
    ) -> PolicySignature:
        """What a loader's arguments ask for (``encoder``: a name, an encoder or None;
        ``alpha_range``: None = a fixed-α policy, ``UNCHECKED`` = either)."""
        return cls(
            pool=None if pool is None else tuple(pool),
            encoder=encoder if isinstance(encoder, str) else encoder.name if encoder else None,
            horizon=horizon,
            allow_stop=allow_stop,
            uncertainty_state=uncertainty_state,
            alpha_range=None if isinstance(alpha_range, Unchecked) else _range_tuple(alpha_range),
        )

    def mismatches(self, policy: PolicySignature) -> list[str]:
        """Why ``policy`` cannot serve what this signature needs, one sentence per field."""
        out: list[str] = []

        def differs(name: str) -> bool:
            wanted, have = getattr(self, name), getattr(policy, name)
            return wanted is not None and have is not None and wanted != have

        if differs("pool"):
            out.append(
                f"policy was trained for pool {list(policy.pool or ())} (in this order) but the config's "
                f"pool is {list(self.pool or ())}; retrain or fix the config's model names/order"
            )
        if differs("encoder"):
            out.append(f"policy was trained with encoder {policy.encoder!r}, not {self.encoder!r}")
        if differs("horizon"):
            out.append(f"policy was trained for horizon L={policy.horizon}, not L={self.horizon}")
        if differs("allow_stop"):
            out.append(
                f"policy was trained with allow_stop={policy.allow_stop} but the config has "
                f"allow_stop={self.allow_stop}; set the config's allow_stop to {policy.allow_stop} or "
                "retrain (the STOP action is part of the policy's outputs)"
            )
        if differs("uncertainty_state"):
            out.append(
                f"policy was trained with uncertainty_state={policy.uncertainty_state} but the config "
                f"has uncertainty_state={self.uncertainty_state}; set the config's uncertainty_state to "
                f"{policy.uncertainty_state} or retrain (the confidence is part of its inputs)"
            )
        if differs("alpha_range"):
            out.append(
                f"policy was trained with alpha_range={_range_text(policy.alpha_range)} but the config "
                f"has alpha_range={_range_text(self.alpha_range)}; set the config's alpha_range to "
                f"{_range_text(policy.alpha_range)} or retrain (α is an α-conditioned policy's input)"
            )
        return out

    def check(self, policy: PolicySignature, where: str | os.PathLike[str] | None = None) -> None:
        """Raise ``PolicyMismatchError`` (prefixed with ``where``, e.g. the policy.json) on a mismatch."""
        problems = self.mismatches(policy)
        if problems:
            raise PolicyMismatchError(f"{where}: {problems[0]}" if where is not None else problems[0])


@dataclass(frozen=True)
class Decision:
    """One routing decision: the chosen model and the distribution it was drawn from."""

    index: int
    model: str
    probs: dict[str, float] = field(default_factory=dict)
    value: float | None = None

    @property
    def prob(self) -> float:
        return self.probs.get(self.model, 1.0)

    @property
    def stop(self) -> bool:
        """The router chose to end the episode here (no more hops)."""
        return self.model == STOP_ACTION

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "model": self.model, "probs": dict(self.probs), "value": self.value}


@runtime_checkable
class RoutingPolicy(Protocol):
    """What the graph's router node needs: a pool and a decision per state.

    A policy that may return ``STOP_ACTION`` declares it with an ``allow_stop = True`` attribute
    (optional, read with ``getattr``: policies without it never stop); the graph refuses it unless
    the config has ``allow_stop`` too. Likewise a policy that reads the last reply's confidence
    declares ``uncertainty_state = True`` and then takes ``decide(..., confidence=...)``; one that
    takes the cost weight as an input declares ``alpha_range = (lo, hi)`` and takes
    ``decide(..., alpha=...)``.
    """

    @property
    def pool(self) -> list[str]: ...

    def decide(
        self,
        context: str,
        stage: int,
        cost: float,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> Decision: ...


LastConfidence = Confidence | Mapping[str, float] | None
"""The last reply's confidence as a policy receives it (a trace's dict, or None before a hop)."""


class FixedRoutePolicy:
    """Always the same route (e.g. ``["smollm2", "gemma"]``): the fixed-route baselines.

    A route shorter than L repeats its last model by default; with ``stop=True`` it STOPs after
    its last model instead (needs a config with ``allow_stop``), so it expresses routes of any
    length 1..L — the shorter routes a STOP router can take.
    """

    def __init__(self, pool: Sequence[str], route: Sequence[str], *, stop: bool = False) -> None:
        unknown = [name for name in route if name not in pool]
        if unknown:
            raise ValueError(f"route names unknown models {unknown}; the pool is {list(pool)}")
        if not route:
            raise ValueError(
                "route must name at least one model (STOP is never allowed before the first hop)"
            )
        self._pool = list(pool)
        self.route = list(route)
        self.allow_stop = stop

    @property
    def pool(self) -> list[str]:
        return list(self._pool)

    def decide(
        self,
        context: str,
        stage: int,
        cost: float,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> Decision:
        if stage >= len(self.route) and self.allow_stop:
            probs = {**dict.fromkeys(self._pool, 0.0), STOP_ACTION: 1.0}
            return Decision(len(self._pool), STOP_ACTION, probs)
        name = self.route[min(stage, len(self.route) - 1)]
        probs = {n: float(n == name) for n in self._pool}
        if self.allow_stop:
            probs[STOP_ACTION] = 0.0
        return Decision(self._pool.index(name), name, probs)


class _StateShaped(Protocol):
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
    policy: _StateShaped,
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


def decision_from(
    logits: torch.Tensor,
    value: torch.Tensor,
    actions: Sequence[str],
    *,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> Decision:
    """The ``Decision`` of one state's [1, A] logits: argmax, or a draw from π seeded by ``generator``.

    Why one function: every policy kind must turn its logits into a route the same way.
    """
    probs = torch.softmax(logits[0].float().cpu(), dim=-1)
    if sample:
        index = int(torch.multinomial(probs, 1, generator=generator).item())
    else:
        index = int(torch.argmax(probs).item())
    return Decision(
        index,
        actions[index],
        {name: float(p) for name, p in zip(actions, probs.tolist(), strict=True)},
        float(value.item()),
    )


def confidence_tensor(confidence: LastConfidence, device: torch.device | str = "cpu") -> torch.Tensor:
    """[1, 3] features of one last reply's confidence (neutral when None)."""
    return torch.tensor([confidence_features(confidence)], dtype=torch.float32, device=device)


def _layer(inputs: int, outputs: int, std: float) -> nn.Linear:
    """CleanRL's orthogonal init: small actor head → near-uniform untrained policy."""
    layer = nn.Linear(inputs, outputs)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, 0.0)
    return layer


class TrainedPolicy(nn.Module):
    """What both learned policies share: the state trunk, the frozen encoder, ``decide``, ``save``.

    Subclasses (``RouterPolicy``, ``dynamic_policy.DescriptorPolicy``) build their heads after
    calling ``__init__`` (the module order, hence the seeded initialisation, is trunk then heads),
    define ``pool``/``forward`` and the policy.json head of ``metadata``. The encoder is frozen and
    kept outside the module's parameters (it is not saved with the policy; its name and dimension
    are). ``forward`` works on precomputed embeddings so PPO can train from cached encodings;
    ``decide`` is the text-in, model-out call the graph makes, on whatever device the weights are.
    """

    critic: nn.Linear
    """The value head V(s) (built by the subclass, after its policy head)."""

    def __init__(
        self,
        *,
        encoder_name: str,
        embedding_dim: int,
        horizon: int = 2,
        hidden_size: int = 256,
        stage_dim: int = 16,
        cost_scale: float = 1.0,
        encoder: SentenceEncoder | None = None,
        max_seq_len: int = 512,
        allow_stop: bool = False,
        uncertainty_state: bool = False,
        alpha_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if cost_scale <= 0:
            raise ValueError(f"cost_scale must be > 0, got {cost_scale}")
        if encoder is not None and encoder.dim != embedding_dim:
            raise PolicyMismatchError(
                f"encoder {encoder.name!r} gives {encoder.dim}-d embeddings, policy expects {embedding_dim}"
            )
        self.encoder_name = encoder_name
        self.embedding_dim = embedding_dim
        self.horizon = horizon
        self.hidden_size = hidden_size
        self.stage_dim = stage_dim
        self.cost_scale = cost_scale
        self.max_seq_len = max_seq_len
        self.allow_stop = bool(allow_stop)
        self.uncertainty_state = bool(uncertainty_state)
        self.alpha_range: tuple[float, float] | None = None
        if alpha_range is not None:
            lo, hi = (float(a) for a in alpha_range)
            if not 0 < lo < hi:
                raise ValueError(f"alpha_range must be (lo, hi) with 0 < lo < hi, got {list(alpha_range)}")
            self.alpha_range = (lo, hi)
        self._encoder = encoder
        self.stage_embedding = nn.Embedding(horizon, stage_dim)
        inputs = state_input_size(embedding_dim, stage_dim, self.uncertainty_state, self.alpha_conditioned)
        self.trunk = nn.Sequential(
            _layer(inputs, hidden_size, math.sqrt(2)),
            nn.Tanh(),
            _layer(hidden_size, hidden_size, math.sqrt(2)),
            nn.Tanh(),
        )

    @property
    def pool(self) -> list[str]:
        raise NotImplementedError

    @property
    def actions(self) -> list[str]:
        """Action labels in logit order: the pool, then ``STOP_ACTION`` when ``allow_stop``."""
        return [*self.pool, STOP_ACTION] if self.allow_stop else self.pool

    def action_mask(self, stages: torch.Tensor) -> torch.Tensor:
        """[B, A] bool, True where the action is allowed: everything except STOP at stage 0."""
        mask = torch.ones(len(stages), len(self.actions), dtype=torch.bool, device=stages.device)
        if self.allow_stop:
            mask[:, -1] = stages != 0
        return mask

    def member_logits(self, hidden: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """[B, A] raw logits from the state features ``hidden`` [B, H] (and the context embeddings)."""
        raise NotImplementedError

    def forward(
        self,
        embeddings: torch.Tensor,
        stages: torch.Tensor,
        costs: torch.Tensor,
        confidences: torch.Tensor | None = None,
        alphas: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, A], value [B]) for a batch of encoded states; A = M (+1 for STOP).

        Forbidden actions (STOP at stage 0) get ``_MASKED_LOGIT`` here, so every consumer —
        ``decide``, PPO's rollouts and its update — computes probabilities over the same
        allowed set and the log-probs of rollout and update agree.
        """
        hidden = self.trunk(state_features(self, embeddings, stages, costs, confidences, alphas))
        logits = self.member_logits(hidden, embeddings)
        if self.allow_stop:
            logits = logits.masked_fill(~self.action_mask(stages.to(logits.device)), _MASKED_LOGIT)
        return logits, self.critic(hidden).squeeze(-1)

    @property
    def alpha_conditioned(self) -> bool:
        """α is an input (``alpha_range`` set): one policy serves every trade-off in the range."""
        return self.alpha_range is not None

    def shape(self) -> dict[str, Any]:
        """The constructor keyword arguments that make another policy of this one's shape."""
        return {
            "encoder_name": self.encoder_name,
            "embedding_dim": self.embedding_dim,
            "horizon": self.horizon,
            "hidden_size": self.hidden_size,
            "stage_dim": self.stage_dim,
            "cost_scale": self.cost_scale,
            "encoder": self._encoder,
            "max_seq_len": self.max_seq_len,
            "allow_stop": self.allow_stop,
            "uncertainty_state": self.uncertainty_state,
            "alpha_range": self.alpha_range,
        }

    @classmethod
    def for_encoder(cls, pool: Any, encoder: TextEncoder, **kwargs: Any) -> Self:
        """An untrained policy over ``pool`` sized for ``encoder`` (the subclasses take the pool first)."""
        return cls(  # type: ignore[misc]
            pool,
            encoder_name=encoder.name,
            embedding_dim=encoder.dim,
            encoder=encoder,
            max_seq_len=encoder.max_seq_len,
            **kwargs,
        )

    @property
    def encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            self._encoder = load_encoder(self.encoder_name, self.max_seq_len)
        if self._encoder.dim != self.embedding_dim:
            raise PolicyMismatchError(
                f"encoder {self.encoder_name!r} gives {self._encoder.dim}-d embeddings, "
                f"the policy was trained on {self.embedding_dim}-d"
            )
        return self._encoder

    def decide(
        self,
        context: str,
        stage: int,
        cost: float,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        confidence: LastConfidence = None,
        alpha: float | None = None,
    ) -> Decision:
        """Greedy (argmax) by default; ``sample=True`` draws from π, seeded by ``generator``.

        ``confidence``: the last reply's (an ``uncertainty_state`` policy's input; ignored
        otherwise). ``alpha``: the cost weight to decide for (an α-conditioned policy needs it,
        inside its ``alpha_range``; ignored otherwise). The inputs go to the weights' device, so
        a policy moved to a GPU decides there.
        """
        alphas = None
        if self.alpha_range is not None:
            alphas = torch.tensor([check_alpha(alpha, self.alpha_range)], dtype=torch.float32)
        embedding = self.encoder.encode([context])
        device = next(self.parameters()).device
        with torch.inference_mode():
            logits, value = self(
                embedding.to(device),
                torch.tensor([stage], device=device),
                torch.tensor([cost], device=device),
                confidence_tensor(confidence, device) if self.uncertainty_state else None,
                None if alphas is None else alphas.to(device),
            )
        return decision_from(logits, value, self.actions, sample=sample, generator=generator)

    # ------------------------------------------------------------------------------ persistence

    def metadata_head(self) -> dict[str, Any]:
        """The kind-specific start of ``policy.json`` (format version, pool, ...)."""
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        return {
            **self.metadata_head(),
            "encoder": {
                "name": self.encoder_name,
                "dim": self.embedding_dim,
                "max_seq_len": self.max_seq_len,
            },
            "horizon": self.horizon,
            "allow_stop": self.allow_stop,
            "uncertainty_state": self.uncertainty_state,
            **({"alpha_range": list(self.alpha_range)} if self.alpha_range is not None else {}),
            "hidden_size": self.hidden_size,
            "stage_dim": self.stage_dim,
            "cost_scale": self.cost_scale,
        }

    def save(self, directory: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
        """Write ``policy.safetensors`` + ``policy.json`` atomically as a pair (a new folder, then
        one rename: ``policy_files.save_policy_folder``)."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        return save_policy_folder(directory, tensors, {**self.metadata(), **(extra or {})})

    @staticmethod
    def shape_from_meta(meta: Mapping[str, Any], encoder: SentenceEncoder | str | None) -> dict[str, Any]:
        """The constructor arguments a saved ``policy.json`` fixes (all but the pool)."""
        enc_meta = meta["encoder"]
        return {
            "encoder_name": enc_meta["name"],
            "embedding_dim": enc_meta["dim"],
            "horizon": meta["horizon"],
            "hidden_size": meta["hidden_size"],
            "stage_dim": meta["stage_dim"],
            "cost_scale": meta["cost_scale"],
            "encoder": None if encoder is None or isinstance(encoder, str) else encoder,
            "max_seq_len": enc_meta.get("max_seq_len", 512),
            "allow_stop": bool(meta.get("allow_stop", False)),
            "uncertainty_state": saved_uncertainty(meta),
            "alpha_range": meta.get("alpha_range"),
        }

    @staticmethod
    def read_checked(
        directory: str | os.PathLike[str],
        wanted: PolicySignature,
        version: int,
        kind: str | None = None,
        fields: Mapping[str, type] | None = None,
    ) -> tuple[Path, dict[str, Any]]:
        """A saved folder and its ``policy.json``, after the kind, format and signature checks;
        ``fields``: what this kind's ``policy.json`` needs beyond the common fields (a missing or
        mistyped one is a ``LoadError`` naming the file)."""
        folder = Path(directory)
        meta_path = folder / _META
        meta = read_policy_meta(folder)
        if kind is not None and meta.get("kind", "mlp") != kind:
            raise PolicyMismatchError(
                f"{meta_path}: a {meta.get('kind', 'mlp')!r} policy, not a {kind} policy; "
                "load it with hierrouter_graph.dynamic_policy.load_saved_policy (either kind)"
            )
        if meta.get("format_version") != version:
            raise PolicyMismatchError(
                f"{meta_path}: format_version {meta.get('format_version')!r}, this library reads {version}"
            )
        wanted.check(PolicySignature.from_meta(meta), meta_path)
        if fields:
            require_fields(meta_path, meta, fields)
        return folder, meta

    def load_weights(self, folder: Path) -> None:
        """The saved weights, in eval mode (a damaged or mismatched file names itself)."""
        load_weights_into(self, folder)
        self.eval()

    KIND: ClassVar[str | None] = None
    """``policy.json``'s ``kind`` (None: the files carry none, a ``RouterPolicy``)."""
    FORMAT_VERSION: ClassVar[int] = POLICY_FORMAT_VERSION
    FIXED_POOL: ClassVar[bool] = True
    """The weights are the pool (one logit per member): ``load`` refuses another pool."""
    META_FIELDS: ClassVar[Mapping[str, type]] = {}
    """Fields this kind's ``policy.json`` needs beyond the common ones (``read_policy_json``)."""

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        pool: Any = None,
        encoder: SentenceEncoder | str | None = None,
        horizon: int | None = None,
        allow_stop: bool | None = None,
        uncertainty_state: bool | None = None,
        alpha_range: Sequence[float] | Unchecked | None = UNCHECKED,
    ) -> Self:
        """Load a saved policy, checking it against the pool/encoder/horizon/allow_stop/
        uncertainty_state/alpha_range it will serve (``PolicyMismatchError``); ``None`` leaves that
        one unchecked (for ``alpha_range``, ``UNCHECKED`` does: None asks for a fixed-α policy).

        A file without ``allow_stop`` (or ``uncertainty_state``, or ``alpha_range``), written
        before it existed, is a policy without STOP (without the confidence input, trained at one
        α). A policy whose pool is an input (``FIXED_POOL = False``) is given ``pool`` instead of
        being checked against it.
        """
        wanted = PolicySignature.wanted(
            pool=pool if cls.FIXED_POOL else None,
            encoder=encoder,
            horizon=horizon,
            allow_stop=allow_stop,
            uncertainty_state=uncertainty_state,
            alpha_range=alpha_range,
        )
        folder, meta = cls.read_checked(directory, wanted, cls.FORMAT_VERSION, cls.KIND, cls.META_FIELDS)
        policy = cls.from_meta(meta, encoder)
        policy.load_weights(folder)
        if pool is not None and not cls.FIXED_POOL:
            policy.set_pool(pool)
        return policy

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], encoder: SentenceEncoder | str | None) -> Self:
        """An untrained policy shaped as the saved ``policy.json`` says."""
        raise NotImplementedError

    def set_pool(self, pool: Any) -> None:
        """Route over ``pool`` from now on (only a policy whose pool is an input can)."""
        raise PolicyMismatchError(f"{type(self).__name__}'s weights are its pool; retrain to change it")

    @classmethod
    def pool_of(cls, config: Any) -> Any:
        """What ``load`` takes as the pool of ``config``."""
        raise NotImplementedError

    @classmethod
    def load_for(
        cls, directory: str | os.PathLike[str], config: Any, encoder: SentenceEncoder | None = None
    ) -> Self:
        """A saved policy checked against ``config`` (pool, encoder name, L, STOP, confidence
        input, α range)."""
        return cls.load(
            directory,
            pool=cls.pool_of(config),
            encoder=encoder,
            horizon=config.horizon,
            allow_stop=config.allow_stop,
            uncertainty_state=config.uncertainty_state,
            alpha_range=config.alpha_range,
        )


class RouterPolicy(TrainedPolicy):
    """The HierRouter actor-critic: one logit per pool member (its weights ARE the pool)."""

    META_FIELDS: ClassVar[Mapping[str, type]] = _MLP_FIELDS

    def __init__(self, pool: Sequence[str], **shape: Any) -> None:
        """``shape``: ``TrainedPolicy``'s keyword arguments (encoder_name, embedding_dim, horizon, ...)."""
        if len(pool) < 1 or len(set(pool)) != len(pool):
            raise ValueError(f"pool must hold unique model names, got {list(pool)}")
        super().__init__(**shape)
        self._pool = list(pool)
        self.actor = _layer(self.hidden_size, len(self.actions), 0.01)
        self.critic = _layer(self.hidden_size, 1, 1.0)

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


def read_policy_meta(folder: Path) -> dict[str, Any]:
    """The ``policy.json`` of a saved policy folder (both files must be there; damage names the file)."""
    return read_policy_json(folder)
