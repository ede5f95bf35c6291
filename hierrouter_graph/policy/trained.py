"""The learned router policies' shared base ``TrainedPolicy`` (of ``router.RouterPolicy`` and
``dynamic.DescriptorPolicy``): state encoding, masking, saving and loading.

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
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from torch import nn

from hierrouter_graph.loading_errors import require_fields
from hierrouter_graph.policy.alpha import check_alpha, check_alpha_range, trained_alpha_of
from hierrouter_graph.policy.encoder import SentenceEncoder, TextEncoder, load_encoder
from hierrouter_graph.policy.files import load_weights_into, read_policy_json, save_policy_folder
from hierrouter_graph.policy.inputs import (
    LastConfidence,
    confidence_tensor,
    orthogonal_layer,
    state_features,
    state_input_size,
)
from hierrouter_graph.policy.protocol import STOP_ACTION, Decision, decision_from
from hierrouter_graph.policy.signature import (
    UNCHECKED,
    PolicyMismatchError,
    PolicySignature,
    Unchecked,
    saved_uncertainty,
)

__all__ = ["MLP_KIND", "POLICY_FORMAT_VERSION", "TrainedPolicy", "read_policy_meta"]

POLICY_FORMAT_VERSION = 1
MLP_KIND = "mlp"  # a RouterPolicy's kind (dynamic_policy.TRAINED_POLICY_KINDS); its files carry no "kind"
_META = "policy.json"

_MASKED_LOGIT = -1e9
"""Logit of a forbidden action: exp() underflows to exactly 0 probability, yet (unlike -inf) the
entropy and log-softmax stay finite, so PPO's loss never sees NaN."""


class TrainedPolicy(nn.Module):
    """What both learned policies share: the state trunk, the frozen encoder, ``decide``, ``save``.

    Subclasses (``RouterPolicy``, ``dynamic.DescriptorPolicy``) build their heads after
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
        trained_alpha: float | None = None,
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
        self.alpha_range: tuple[float, float] | None = check_alpha_range(alpha_range)
        self.trained_alpha = trained_alpha  # its files' training α: what it serves (alpha.serving_alpha)
        self._encoder = encoder
        self.stage_embedding = nn.Embedding(horizon, stage_dim)
        inputs = state_input_size(embedding_dim, stage_dim, self.uncertainty_state, self.alpha_conditioned)
        self.trunk = nn.Sequential(
            orthogonal_layer(inputs, hidden_size, math.sqrt(2)),
            nn.Tanh(),
            orthogonal_layer(hidden_size, hidden_size, math.sqrt(2)),
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
            "trained_alpha": self.trained_alpha,
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
        one rename: ``files.save_policy_folder``)."""
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
            "trained_alpha": trained_alpha_of(meta),
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
        if kind is not None and meta.get("kind", MLP_KIND) != kind:
            raise PolicyMismatchError(
                f"{meta_path}: a {meta.get('kind', MLP_KIND)!r} policy, not a {kind} policy; "
                "load it with hierrouter_graph.policy.dynamic.load_saved_policy (either kind)"
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

    KIND: ClassVar[str]  # its name in dynamic_policy.TRAINED_POLICY_KINDS and policy.json's "kind"
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


def read_policy_meta(folder: Path) -> dict[str, Any]:
    """The ``policy.json`` of a saved policy folder (both files must be there; damage names the file)."""
    return read_policy_json(folder)
