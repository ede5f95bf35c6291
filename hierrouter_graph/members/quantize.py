"""The fast CPU path: selective int8 and native-bf16 detection, chosen per machine.

Why selective: torch's dynamic int8 (``quantize_dynamic``) uses one activation scale per tensor.
Qwen-family MLPs feed rare, very large activations into ``down_proj``; one scale for them rounds
every ordinary activation to zero, and measured reasoning collapses (Qwen2.5-Coder-0.5B GSM8K
5/20 fp32 → 0/20 int8 on every Linear). Keeping ``down_proj`` in full precision restores quality
(4/20) at 2.1x fp32's batched speed on a 2-core avx2 CPU (docs/offline-pool.md, bench/generation_speed.py).

On CUDA the same setting maps to bitsandbytes' LLM.int8 (outlier-aware by construction) through
transformers' ``BitsAndBytesConfig``, with the same modules skipped.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

__all__ = [
    "INT8_KEEP_DEFAULTS",
    "QuantizationUnavailableError",
    "cpu_has_native_bf16",
    "cuda_int8_load_kwargs",
    "int8_keep_modules",
    "quantize_int8_cpu",
]

INT8_KEEP_DEFAULTS: dict[str, tuple[str, ...]] = {
    "qwen2": ("down_proj",),
    "llama": ("down_proj",),
    "mistral": ("down_proj",),
    "gemma3_text": ("down_proj",),
    "gemma3": ("down_proj",),
    "phi3": ("down_proj",),
}
"""Modules kept in full precision under int8, per ``config.model_type`` (the MLP output projection
receives the outlier activations in these architectures). Unknown architectures keep none."""


class QuantizationUnavailableError(RuntimeError):
    """The requested quantization cannot run on this device with what is installed."""


def int8_keep_modules(model_type: str, keep: tuple[str, ...] | None) -> tuple[str, ...]:
    """The module-name suffixes to keep in full precision: ``keep`` if given, else the default."""
    if keep is not None:
        return keep
    return INT8_KEEP_DEFAULTS.get(model_type, ())


def _kept(name: str, keep: tuple[str, ...]) -> bool:
    return any(name == suffix or name.endswith("." + suffix) for suffix in keep)


def quantize_int8_cpu(model: Any, keep: tuple[str, ...]) -> int:
    """Replace every ``nn.Linear`` not named in ``keep`` by a dynamic int8 Linear, in place.

    Returns how many layers were quantized. The model must be float32 (dynamic int8 kernels take
    float32 activations). ``quantize_dynamic`` is deprecated in torch 2.13 but is the only int8
    path measured fast on avx2 CPUs (torchao's int8 configs ran 0.4 tok/s here).
    """
    import torch
    from torch import nn

    names = {name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    chosen = {name for name in names if not _kept(name, keep)}
    if not chosen:
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

        quantize_dynamic(
            model, {name: default_dynamic_qconfig for name in chosen}, dtype=torch.qint8, inplace=True
        )
    return len(chosen)


def cuda_int8_load_kwargs(keep: tuple[str, ...]) -> dict[str, Any]:
    """``from_pretrained`` kwargs for int8 on CUDA (bitsandbytes LLM.int8, ``keep`` skipped)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise QuantizationUnavailableError(
            "quantization 'int8' on CUDA uses bitsandbytes; install it (pip install bitsandbytes) "
            "or set quantization: none"
        ) from error
    from transformers import BitsAndBytesConfig

    return {
        "quantization_config": BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=[*keep, "lm_head"])
    }


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (avx512_bf16 or AMX), where bf16 is ~2x fp32.

    Elsewhere (avx2 only) torch emulates bf16: slower than fp32 once batched, so 'auto' keeps fp32.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})
