"""The recorded outcome tree of the embedded offline pool, shipped inside the repo.

Generating the default pool's replies takes hours on a 2-core CPU, so they are recorded once
(``training/record.py``), exported as a small reproducible gzip JSONL, committed, and imported into
the local replay store on demand. With it, ``python training/ppo.py`` and
``python training/evaluate.py`` with no arguments replay instead of generating, and an
interrupted recording resumes on another machine from the committed pieces.

Beside it ship the encoder's embeddings of every context a router decides in on those trees
(float16, keyed by the text's sha256): encoding them takes longer on a CPU than the whole PPO
run, and they never change while the replies and the encoder do not. They are rounded to float16
(relative error below 1e-3); a live encode at inference differs from them by that much.
``python training/export_shipped.py`` rewrites both files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.defaults import default_config
from training.replay import ReplayStore, text_sha

__all__ = [
    "SHIPPED_EMBEDDINGS",
    "SHIPPED_REPLAY",
    "ShippedFileError",
    "export_shipped_embeddings",
    "export_shipped_replay",
    "import_shipped_embeddings",
    "import_shipped_replay",
]

SHIPPED_REPLAY = Path(__file__).parent / "data" / "offline_pool.replay.jsonl.gz"
SHIPPED_EMBEDDINGS = Path(__file__).parent / "data" / "offline_pool.state_embeddings.safetensors"

_SHA_KEY, _VECTOR_KEY = "text_sha256", "vectors"


class ShippedFileError(ValueError):
    """A shipped embeddings file is not what ``export_shipped_embeddings`` writes."""


def _default_fingerprints(config: RouterConfig | None = None) -> list[str]:
    return [spec.fingerprint() for spec in (config or default_config()).models]


def import_shipped_replay(
    store: ReplayStore, path: Path = SHIPPED_REPLAY, embeddings: Path = SHIPPED_EMBEDDINGS
) -> int:
    """Add the shipped replies (and state embeddings) the store lacks; existing rows are kept.

    Returns the number of replies added (0 when none is shipped).
    """
    import_shipped_embeddings(store, embeddings)
    if not path.is_file():
        return 0
    return store.import_jsonl_gz(path)


def export_shipped_replay(store: ReplayStore, path: Path = SHIPPED_REPLAY) -> int:
    """Write the default pool's replies from ``store`` to the shipped file (atomic, reproducible)."""
    return store.export_jsonl_gz(path, fingerprints=_default_fingerprints())


def export_shipped_embeddings(
    store: ReplayStore, texts: Iterable[str], encoder_name: str, path: Path = SHIPPED_EMBEDDINGS
) -> int:
    """Write the stored ``encoder_name`` embeddings of ``texts`` as float16, sorted by sha (atomic).

    Every text must already be encoded in ``store``: a partial file would silently send training
    back to the encoder for the rest.
    """
    shas = sorted({text_sha(text) for text in texts})
    rows = store.get_embedding_rows(encoder_name, shas)
    missing = [sha for sha in shas if sha not in rows]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(shas)} texts have no {encoder_name!r} embedding in the store; "
            "encode them first (CachedEncoder)"
        )
    tensors = {
        _SHA_KEY: torch.tensor([list(bytes.fromhex(sha)) for sha in shas], dtype=torch.uint8).reshape(
            len(shas), 32
        ),
        _VECTOR_KEY: torch.stack([rows[sha] for sha in shas]).to(torch.float16)
        if shas
        else torch.empty(0, 0, dtype=torch.float16),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    # one metadata key: safetensors writes several in no fixed order, and the file must be reproducible
    save_file(tensors, str(partial), metadata={"encoder": encoder_name})
    partial.chmod(0o644)  # a file meant for the repository, readable like its neighbours
    os.replace(partial, path)
    return len(shas)


def import_shipped_embeddings(store: ReplayStore, path: Path = SHIPPED_EMBEDDINGS) -> int:
    """Add the shipped embeddings the store lacks (as float32); returns how many were added."""
    if not path.is_file():
        return 0
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            keys = set(handle.keys())
            if {_SHA_KEY, _VECTOR_KEY} - keys:
                raise ShippedFileError(
                    f"{path}: expected tensors {_SHA_KEY!r} and {_VECTOR_KEY!r}, got {keys}"
                )
            shas = handle.get_tensor(_SHA_KEY)
            vectors = handle.get_tensor(_VECTOR_KEY)
    except ShippedFileError:
        raise
    except Exception as error:  # safetensors raises its own types for a truncated or foreign file
        raise ShippedFileError(f"{path}: not a readable safetensors file ({error})") from error
    encoder = metadata.get("encoder")
    if not encoder:
        raise ShippedFileError(f"{path}: metadata field 'encoder' is missing")
    if shas.dtype != torch.uint8 or shas.ndim != 2 or shas.shape[1] != 32:
        raise ShippedFileError(
            f"{path}: {_SHA_KEY!r} must be uint8 [n, 32], got {shas.dtype} {tuple(shas.shape)}"
        )
    if vectors.ndim != 2 or vectors.shape[0] != shas.shape[0]:
        raise ShippedFileError(
            f"{path}: {_VECTOR_KEY!r} must be [{shas.shape[0]}, dim], got {tuple(vectors.shape)}"
        )
    hexes = [bytes(row).hex() for row in shas.tolist()]
    return store.put_embedding_rows(encoder, hexes, vectors.to(torch.float32))
