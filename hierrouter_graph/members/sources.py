"""Where a local member's weights come from, and in which dtype they run.

Sources are resolved without surprises: a built-in offline name, a local folder, a GGUF file
(converted once into the cache), or a hub id. When none of these works the error lists every
place that was tried and what to install, instead of a bare hub 404. ``dtype: auto`` picks the
fastest precision this device computes natively (never one it only emulates).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hierrouter_graph.offline import (
    OFFLINE_MODELS,
    MissingOfflineAssetError,
    convert_gguf_to_folder,
    gguf_cache_folder,
    offline_model_folder,
)

__all__ = ["OFFLINE_PREFIX", "ModelSourceError", "builtin_names", "resolve_dtype", "resolve_model_folder"]

OFFLINE_PREFIX = "offline:"


class ModelSourceError(FileNotFoundError):
    """A ModelSpec.source that names nothing loadable."""


def builtin_names() -> str:
    return ", ".join(OFFLINE_PREFIX + key for key in sorted(OFFLINE_MODELS))


def resolve_dtype(dtype: str, device: str, quantization: str = "none") -> Any:
    """'auto' → bfloat16 on CUDA (float16 where bf16 is unsupported), float16 on MPS; on CPU
    bfloat16 where the CPU computes it natively (avx512_bf16/AMX: ~2x float32), else float32.

    On avx2-only CPUs torch emulates bf16 (slower than float32 once batched), so 'auto' keeps
    float32 there. CPU int8 always runs float32 around its int8 layers (the dynamic int8 kernels
    take float32 activations).
    """
    import torch

    from hierrouter_graph.members.quantize import cpu_has_native_bf16

    on_cpu = not device.startswith(("cuda", "mps"))
    if on_cpu and quantization == "int8":
        if dtype not in ("auto", "float32"):
            raise ValueError(f"dtype: int8 on CPU runs float32 activations; got dtype {dtype!r}")
        return torch.float32
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.startswith("mps"):
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def resolve_model_folder(source: str, cache_dir: Path) -> Path | str:
    """Local folder for ``source``, or the hub id itself when it names no local thing."""
    tried: list[str] = []
    if source.startswith(OFFLINE_PREFIX):
        key = source[len(OFFLINE_PREFIX) :]
        if key not in OFFLINE_MODELS:
            raise ModelSourceError(
                f"unknown built-in offline model {source!r}; built-in names are {builtin_names()}"
            )
        try:
            return offline_model_folder(key, cache_dir)
        except MissingOfflineAssetError as error:
            raise ModelSourceError(str(error)) from error
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelSourceError(f"GGUF file not found: {path}")
        return convert_gguf_to_folder(path, gguf_cache_folder(path, cache_dir))
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return convert_gguf_to_folder(ggufs[0], gguf_cache_folder(ggufs[0], cache_dir))
        raise ModelSourceError(
            f"{path} is a folder but holds no config.json (a transformers model folder) "
            f"and {'several' if ggufs else 'no'} .gguf files"
        )
    tried.append(f"local path {path} (does not exist)")
    looks_like_hub_id = source.count("/") == 1 and not source.startswith((".", "/", "~"))
    if looks_like_hub_id:
        return source
    raise ModelSourceError(
        f"model source {source!r} not found. Tried: {'; '.join(tried)}. Expected a built-in name "
        f"({builtin_names()}), a local model "
        "folder, a .gguf file, or a hub id 'org/name' (needs network or a filled HF cache)"
    )
