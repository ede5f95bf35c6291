"""Which engine generates a local member's replies: transformers or OpenVINO GenAI.

Why a module of its own (and no import of ``config`` at run time): ``ModelSpec.fingerprint()``
must name the RESOLVED engine, precision and inference dtype of an OpenVINO member (its replies
differ from the transformers path's), so the resolution has to be importable from ``config``
without a cycle, and it must not load any weights.

``ModelSpec.backend``:
- ``"transformers"``: the torch path (``local.load_causal_lm``), on any device.
- ``"openvino"``: an OpenVINO IR run by openvino-genai on the CPU (``openvino_engine.py``);
  refused with a clear error where the packages are missing or the device is not the CPU.
- ``"auto"`` (default): OpenVINO for the built-in offline Qwen members when the device resolves
  to the CPU and the openvino packages are installed (measured 1.6-2.6x the torch int8 path's
  tok/s with no quality loss, docs/offline-pool.md); transformers everywhere else (CUDA, MPS,
  other models, cloze scoring, LoRA adapters, endpoints).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Literal

from hierrouter_graph.device import resolve_device

if TYPE_CHECKING:
    from hierrouter_graph.model_spec import ModelSpec

__all__ = [
    "AUTO_OPENVINO_SOURCES",
    "OPENVINO_MODULES",
    "BackendUnavailableError",
    "engine_identity",
    "openvino_installed",
    "openvino_settings",
    "resolve_backend",
]

OPENVINO_MODULES = ("openvino", "openvino_genai", "openvino_tokenizers")
"""What running an OpenVINO member needs (converting one also needs ``nncf`` for int8 weights)."""

AUTO_OPENVINO_SOURCES = frozenset(
    {"offline:qwen2.5-coder-0.5b-instruct", "offline:qwen2.5-coder-1.5b-instruct"}
)
"""Sources that ``backend: auto`` runs on OpenVINO on a CPU (the measured ones)."""

INSTALL_HINT = "pip install 'hierrouter-graph[openvino]'"

Backend = Literal["transformers", "openvino"]


class BackendUnavailableError(RuntimeError):
    """``backend: openvino`` asked for where it cannot run (packages missing, not a CPU)."""


def openvino_installed() -> bool:
    """True when every module an OpenVINO member runs on can be imported (nothing is imported)."""
    return all(importlib.util.find_spec(name) is not None for name in OPENVINO_MODULES)


def resolve_backend(spec: ModelSpec) -> Backend:
    """The engine ``spec`` runs on here (see the module docstring).

    Raises:
        BackendUnavailableError: ``backend: openvino`` where the packages are missing or the
            member's device is not the CPU.
    """
    if spec.backend == "transformers" or spec.endpoint is not None or spec.kind == "cloze_mc":
        return "transformers"  # config validation refuses an explicit openvino with these
    device = resolve_device(spec.device)
    if spec.backend == "auto":
        eligible = (
            spec.source in AUTO_OPENVINO_SOURCES
            and spec.adapter is None
            and spec.keep_full_precision is None
            and not spec.generation_kwargs
            and device == "cpu"
        )
        return "openvino" if eligible and openvino_installed() else "transformers"
    if device != "cpu":
        raise BackendUnavailableError(
            f"{spec.name}: backend 'openvino' runs on the CPU here, but device {spec.device!r} "
            f"resolved to {device!r}; use backend 'transformers' (or 'auto') on an accelerator"
        )
    if not openvino_installed():
        missing = [name for name in OPENVINO_MODULES if importlib.util.find_spec(name) is None]
        raise BackendUnavailableError(
            f"{spec.name}: backend 'openvino' needs the python modules {', '.join(missing)}; "
            f"install them with: {INSTALL_HINT}"
        )
    return "openvino"


def openvino_settings(spec: ModelSpec) -> dict[str, str]:
    """An OpenVINO member's numerics, resolved on this machine: weight precision, inference dtype
    and KV-cache precision.

    ``quantization: int8`` → int8 weights (NNCF, per-channel), ``none`` → the float32 weights.
    ``dtype: auto`` → bfloat16 where the CPU computes it natively (avx512_bf16/AMX; OpenVINO's own
    default there), else float32. An explicit ``dtype: float32`` also keeps a float32 KV cache and
    float32 activations (replies equal transformers float32 token for token); otherwise OpenVINO's
    CPU defaults stay: u8 KV cache, dynamically quantized activations (what was measured for speed
    and quality).
    """
    from hierrouter_graph.members.quantize import cpu_has_native_bf16

    dtype = spec.dtype
    if dtype == "auto":
        dtype = "bfloat16" if cpu_has_native_bf16() else "float32"
    return {
        "weights": "int8" if spec.quantization == "int8" else "float32",
        "inference_dtype": dtype,
        "kv_cache": "float32" if spec.dtype == "float32" else "u8",
    }


def engine_identity(spec: ModelSpec) -> dict[str, Any] | None:
    """What ``ModelSpec.fingerprint()`` adds for the engine: None on transformers (so existing
    members' fingerprints stay byte-for-byte the same), else the backend and its resolved numerics.
    """
    if resolve_backend(spec) != "openvino":
        return None
    return {"backend": "openvino", **openvino_settings(spec)}
