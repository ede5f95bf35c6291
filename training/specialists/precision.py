"""Which precision a specialist trains in: bf16 autocast where the hardware computes it natively.

Why a module of its own: ``specialize.py --precision auto`` and ``bench/specialize_speed.py`` must
agree on when bf16 pays: without native bf16 matmuls it still runs on a CPU, but emulated, and is
slower than fp32.
"""

from __future__ import annotations

import torch

__all__ = ["bf16_supported", "resolve_precision"]


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
