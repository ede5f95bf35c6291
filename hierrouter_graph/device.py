"""Which device a model runs on: one rule for members, the encoder and the policy.

``device: auto`` in a config means the best device this machine has — a CUDA GPU, else Apple's
MPS, else the CPU — so a config written on a laptop runs on a GPU server unchanged; an explicit
device is used as given (never hard-coded to CPU).
"""

from __future__ import annotations

__all__ = ["resolve_device"]


def resolve_device(device: str) -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'mps', else 'cpu'; anything else as given."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
