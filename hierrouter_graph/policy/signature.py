"""One check for every place a policy meets a config: ``PolicySignature`` and its mismatch error.

Why a module of its own: the graph, the loaders, the shipped default, PPO and the evaluation all
ask the same question — were these weights made for this pool, encoder, L, STOP, confidence input
and α range? — and answering it in one place keeps the seven checks that once drifted apart as one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["UNCHECKED", "PolicyMismatchError", "PolicySignature", "Unchecked", "saved_uncertainty"]


class PolicyMismatchError(ValueError):
    """A saved policy does not match the pool or encoder it is being used with."""


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
