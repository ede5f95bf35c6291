"""How sure a model was of its own reply, read off the generation itself (no extra model call).

The paper's open question "an uncertainty signal in the state": a router that sees the last reply's
confidence can send a hesitant answer on to a stronger model and keep a confident one. Two numbers
describe a reply:

- ``mean_logprob``: the mean log-probability of the reply's tokens under the distribution they were
  decoded from (0 = certain, more negative = less sure).
- ``mean_entropy``: the mean entropy (nats) of those next-token distributions (0 = one token had
  all the mass).

Local ``generate`` members record them with a logits processor while decoding greedily (the chosen
token is the argmax of the scores the processor sees); the cloze specialist reads them off its
option distribution (softmax over the options' log-likelihoods). Members that expose no log-probs
(remote endpoints, sampling, the plain pipeline with ``max_batch_size: 1``, user chat models) give
``None``, which the router sees as the neutral feature vector ``NEUTRAL_FEATURES`` — its last entry
is a "known" flag, so "unknown" is never confused with "certain".

OpenVINO members (``openvino_engine.py``) know only the reply's cumulative log-probability: their
``mean_entropy`` is None, which the router's features read as 0 (the known flag stays 1), and a
replay store keeps no confidence for them (``training/backfill_confidence.py`` can re-score the
reply with the torch model to get both numbers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = [
    "CONFIDENCE_FEATURES",
    "NEUTRAL_FEATURES",
    "Confidence",
    "ConfidenceRecorder",
    "confidence_features",
    "mean_confidence",
    "option_confidence",
    "reply_lengths",
]

CONFIDENCE_FEATURES = 3
"""Width of the router's confidence input: (mean log-prob, mean entropy, known flag)."""

NEUTRAL_FEATURES: tuple[float, float, float] = (0.0, 0.0, 0.0)
"""The features of "no confidence available": before the first hop, and for models without log-probs."""


@dataclass(frozen=True)
class Confidence:
    """The last reply's confidence (see the module docstring for the two numbers)."""

    mean_logprob: float
    mean_entropy: float | None
    """None where the engine does not expose the step distributions (OpenVINO)."""

    def __post_init__(self) -> None:
        for name in ("mean_logprob", "mean_entropy"):
            value = getattr(self, name)
            if value is None and name == "mean_entropy":
                continue
            if not math.isfinite(value):
                raise ValueError(f"Confidence.{name} must be finite, got {value}")
        if self.mean_logprob > 1e-6:
            raise ValueError(f"Confidence.mean_logprob is a log-probability (<= 0), got {self.mean_logprob}")
        if self.mean_entropy is not None and self.mean_entropy < -1e-6:
            raise ValueError(f"Confidence.mean_entropy must be >= 0, got {self.mean_entropy}")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_any(cls, value: Confidence | Mapping[str, Any] | None) -> Confidence | None:
        """A ``Confidence`` from itself, its dict form (traces, replay rows, metadata) or None."""
        if value is None or isinstance(value, Confidence):
            return value
        try:
            entropy = value["mean_entropy"]
            return cls(float(value["mean_logprob"]), None if entropy is None else float(entropy))
        except (KeyError, TypeError) as err:
            raise ValueError(
                "confidence: expected {'mean_logprob': float, 'mean_entropy': float or None}, "
                f"got {value!r}"
            ) from err


def confidence_features(value: Confidence | Mapping[str, Any] | None) -> tuple[float, float, float]:
    """The router's input for a reply's confidence: (mean log-prob, mean entropy, 1) or neutral."""
    confidence = Confidence.from_any(value)
    if confidence is None:
        return NEUTRAL_FEATURES
    return (confidence.mean_logprob, confidence.mean_entropy or 0.0, 1.0)


def option_confidence(option_logprobs: Sequence[float]) -> Confidence:
    """The cloze specialist's confidence: its options renormalised into one distribution.

    ``mean_logprob`` is the log-probability of the chosen (best) option, ``mean_entropy`` the
    entropy over the options: a clear winner gives (≈0, ≈0), a four-way tie (−log 4, log 4).
    """
    if not option_logprobs:
        raise ValueError("option_confidence needs at least one option score")
    logprobs = torch.log_softmax(torch.tensor(list(option_logprobs), dtype=torch.float64), dim=0)
    entropy = float(-(logprobs.exp() * logprobs).sum())
    return Confidence(float(logprobs.max()), max(entropy, 0.0))


class ConfidenceRecorder:
    """A ``logits_processor`` for greedy ``generate`` that records each step's confidence.

    It returns the scores unchanged; per step it keeps, for every row, the log-probability of the
    argmax token (the token greedy decoding picks) and the entropy of the distribution. ``summarize``
    then averages them over each row's own reply tokens (up to and including its stop token).
    Why a processor rather than ``output_logits``: keeping the logits would hold batch × vocabulary
    floats per step (16 × 262k × 128 for Gemma: 2 GB); this keeps two floats per row and step.
    """

    def __init__(self) -> None:
        self._logprobs: list[torch.Tensor] = []
        self._entropies: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logprobs = torch.log_softmax(scores.float(), dim=-1)
        self._logprobs.append(logprobs.max(dim=-1).values.cpu())
        probs = logprobs.exp()
        entropy = -(probs * torch.where(probs > 0, logprobs, torch.zeros_like(logprobs))).sum(dim=-1)
        self._entropies.append(entropy.cpu())
        return scores

    def steps(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per row and step: the argmax log-probability and the entropy (``[rows, steps]`` each)."""
        if not self._logprobs:
            return None
        return torch.stack(self._logprobs, dim=1), torch.stack(self._entropies, dim=1)

    def summarize(self, lengths: Sequence[int]) -> list[Confidence | None]:
        """Per row: the mean over its first ``lengths[row]`` steps (None for an empty reply)."""
        recorded = self.steps()
        if recorded is None:
            return [None] * len(lengths)
        logprobs, entropies = recorded
        if logprobs.shape[0] != len(lengths):
            raise ValueError(f"recorded {logprobs.shape[0]} rows, got lengths for {len(lengths)}")
        return [
            mean_confidence(logprobs[row, : int(length)], entropies[row, : int(length)])
            for row, length in enumerate(lengths)
        ]


def mean_confidence(logprobs: torch.Tensor, entropies: torch.Tensor) -> Confidence | None:
    """A reply's confidence from its steps' argmax log-probabilities and entropies (None if none)."""
    if logprobs.numel() == 0:
        return None
    mean_logprob = min(float(logprobs.mean()), 0.0)
    return Confidence(mean_logprob, max(float(entropies.mean()), 0.0))


def reply_lengths(new_tokens: torch.Tensor, stop_ids: Sequence[int]) -> list[int]:
    """Per row of ``generate``'s new tokens: tokens up to and including the first stop token.

    After a row stops, ``generate`` pads it (often with the stop token itself); those steps were not
    decoded for that row and must not enter its mean.
    """
    rows, steps = new_tokens.shape
    if not stop_ids:
        return [steps] * rows
    stops = torch.isin(new_tokens, torch.tensor(list(stop_ids), device=new_tokens.device))
    lengths = []
    for row in range(rows):
        hits = torch.nonzero(stops[row]).flatten()
        lengths.append(int(hits[0]) + 1 if len(hits) else steps)
    return lengths
