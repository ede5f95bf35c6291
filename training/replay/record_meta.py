"""What produced a record: its ``.meta.json`` beside the ``.jsonl.gz`` (``write_record_meta``), per
member its fingerprint and backend, how hops were batched, torch and the CPU's bf16 support.

Why apart from the recorder (``record.py``): the export of a shipped record writes it too, and
it describes the record's numerics, not how the tree was filled.
"""

from __future__ import annotations

from pathlib import Path

from hierrouter_graph.config import RouterConfig

__all__ = [
    "batching_of",
    "record_meta_path",
    "write_record_meta",
]


def record_meta_path(record: Path) -> Path:
    """Where ``write_record_meta`` describes the record ``record`` (``x.jsonl.gz`` → ``x.meta.json``)."""
    return record.with_name(record.name.removesuffix(".jsonl.gz") + ".meta.json")


def batching_of(kind: str, backend: str) -> str:
    """How a member's hops were batched while recording, and whether a reply can depend on its
    batch mates — what a reader needs to judge a record made on other hardware."""
    if kind == "cloze_mc":
        return "no generation: one scoring forward pass per question, batched; float32 scores"
    if backend == "endpoint":
        return "the inference server's own batching (concurrent requests up to endpoint.max_concurrency)"
    if backend.startswith("openvino"):
        return (
            "greedy; openvino-genai continuous batching (no padding), up to --batch-size prompts per call: "
            "a reply's tokens do not depend on its batch mates (its log-probs only in the last bits)"
        )
    if "int8" in backend:
        return (
            "greedy; up to --batch-size prompts of similar length per left-padded generate; a row leaves the "
            "batch as soon as it stops (BatchGenerator prune_finished). int8 activation scales are "
            "per batch, so a reply can depend on its batch mates"
        )
    return (
        "greedy; up to --batch-size prompts of similar length per left-padded generate; a row leaves the "
        "batch as soon as it stops (BatchGenerator prune_finished); float weights and activations"
    )


def write_record_meta(config: RouterConfig, path: Path) -> None:
    """Name what produced a record: per member its fingerprint and backend (device, dtype,
    quantization as this machine loads it; no weights are loaded) and how its hops were batched, plus
    torch and the CPU's bf16 support.

    Why: replies are keyed by the member's *spec*, so a GPU user replays this record without
    misses, while this file says which numerics actually generated it.
    """
    import json
    import os

    import torch

    from hierrouter_graph.members.local import describe_backend
    from hierrouter_graph.members.quantize import cpu_has_native_bf16

    members = {}
    for spec in config.models:
        local = spec.endpoint is None
        backend = describe_backend(spec, config.resolved_cache_dir) if local else "endpoint"
        members[spec.name] = {
            "fingerprint": spec.fingerprint(),
            "backend": backend,
            "batching": batching_of(spec.kind, backend),
        }
    meta = {
        "members": members,
        "torch": torch.__version__,
        "cpu_native_bf16": cpu_has_native_bf16(),
        "stage_prompts": [config.stage_prompt(stage) for stage in range(config.horizon)],
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
