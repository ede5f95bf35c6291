"""What determines a specialist's weights: ``SpecializeArgs``, and the precision it trains in.

Why a module of its own: the trainer (``specialize.py``), its card (``card.py``), its command line
and ``bench/specialize_speed.py`` all read these settings. The precision is bf16 autocast only
where the hardware computes bf16 natively: emulated on a CPU it is slower than fp32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["SpecializeArgs", "bf16_supported", "resolve_precision"]


@dataclass(frozen=True)
class SpecializeArgs:
    """Everything that determines the trained weights (plus ``checkpoint_every``)."""

    domain: str = "code"
    steps: int | None = None
    epochs: float = 1.0
    lr: float = 2e-4
    rank: int = 16
    alpha: int | None = None  # None: 2 × rank
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    batch_tokens: int = 4096
    max_answer_tokens: int = 128
    warmup_fraction: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    precision: str = "auto"
    checkpoint_every: int = 10

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if isinstance(data["target_modules"], tuple):
            data["target_modules"] = list(data["target_modules"])
        return data

    @property
    def lora_alpha(self) -> int:
        return self.alpha if self.alpha is not None else 2 * self.rank


def bf16_supported(device: str = "cpu") -> bool:
    """Native bf16 matmuls: avx512_bf16 or AMX on a CPU, compute capability on CUDA.

    Without them bf16 autocast still runs on a CPU, but emulated, and is slower than fp32.
    """
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """'auto' → 'bf16' when ``bf16_supported(device)``, else 'fp32'."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if bf16_supported(device) else "fp32"
