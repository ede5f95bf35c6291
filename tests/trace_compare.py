"""Compare traces and hops across batched and unbatched runs.

Batched and single greedy fp32 generation give the same tokens, but the confidence read off the
logits (``hierrouter_graph/confidence.py``) goes through padded matmuls and may differ in the last
float bits; everything else must be exactly equal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest


def _split(hop: Any) -> tuple[Any, Any]:
    if dataclasses.is_dataclass(hop) and not isinstance(hop, type):
        confidence = hop.confidence  # type: ignore[attr-defined]
        return dataclasses.replace(hop, confidence=None), None if confidence is None else confidence.as_dict()
    hop = dict(hop)
    return hop, hop.pop("confidence", None)


def assert_same_hops(got: Sequence[Any], want: Sequence[Any], *, confidence: bool = True) -> None:
    """Hops (HopResults or trace dicts) equal, confidences equal to 1e-5 (``confidence=False``:
    not compared, for a side that exposes none, such as the plain pipeline)."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        (a_rest, a_conf), (b_rest, b_conf) = _split(a), _split(b)
        assert a_rest == b_rest
        if not confidence:
            continue
        assert (a_conf is None) == (b_conf is None)
        if a_conf is not None:
            assert a_conf == pytest.approx(b_conf, abs=1e-5)


def assert_same_traces(
    got: Sequence[Sequence[Any]], want: Sequence[Sequence[Any]], *, confidence: bool = True
) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert_same_hops(a, b, confidence=confidence)
