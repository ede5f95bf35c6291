"""Frozen sentence encoder of the context c_t, with an in-memory cache.

The same contexts recur constantly (every query's c_0 is encoded at every episode and every
inference), so embeddings are cached by text; the encoder itself is loaded once per process.

Concurrent single-context encodes (the router node of many queries in flight: ``graph.batch``, a
server) are coalesced by a ``MicroBatcher`` into one batched encoder call. Why: profiled on the
default pool, 32 queries made 66 separate encoder calls running in 32 threads at once; they
fought the batched ``generate`` for the cores, and finished one by one, so the first hop of most
queries reached its model after that model's first micro-batch had left with only a few rows.
One batched encode lets the decisions of a wave of queries finish together.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from hierrouter_graph.config import default_cache_dir
from hierrouter_graph.device import resolve_device
from hierrouter_graph.microbatch import BatchStats, MicroBatcher
from hierrouter_graph.offline_encoders import OFFLINE_ENCODERS, offline_encoder_folder

__all__ = ["EncoderLoadError", "SentenceEncoder", "TextEncoder", "load_encoder"]


class SentenceEncoder(Protocol):
    """What a policy (and training's environment) needs of an encoder.

    Why a protocol: training wraps a ``TextEncoder`` in a store-backed cache (``CachedEncoder``)
    that must stand wherever the encoder does, so policies evaluated on recorded data read the
    recorded embeddings instead of re-encoding.
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> torch.Tensor: ...


class EncoderLoadError(OSError):
    """The encoder name is neither built in, nor a local folder, nor loadable from the hub."""


class TextEncoder:
    """Wraps a SentenceTransformer: ``encode(texts) -> float32 CPU tensor [n, dim]``.

    Texts longer than ``max_seq_len`` tokens are truncated by the encoder (the head is kept), as
    in the paper (all-mpnet-base-v2, 512 tokens).
    """

    def __init__(self, name: str, model: Any, max_seq_len: int, cache_size: int = 8192) -> None:
        self.name = name
        self.model = model
        self.model.max_seq_length = max_seq_len
        self.max_seq_len = max_seq_len
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else None
        self.dim = int(dim or model.get_sentence_embedding_dimension())
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._batcher: MicroBatcher[str, torch.Tensor] = MicroBatcher(
            lambda batch: list(self._encode_uncached(batch)),
            max_batch_size=64,
            max_wait_ms=2.0,
            name="encoder",
        )

    def batch_stats(self) -> BatchStats:
        """How concurrent single-context encodes were coalesced (for benches and logs)."""
        return self._batcher.stats()

    def clear_cache(self) -> None:
        """Forget every cached embedding (benches time encoding; the next encode recomputes)."""
        with self._lock:
            self._cache.clear()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            if len(missing) == 1:  # one context (a routing decision): share a batch with concurrent ones
                vectors = self._batcher(missing[0]).unsqueeze(0)
            else:
                vectors = self._encode_uncached(missing)
            with self._lock:
                for text, vector in zip(missing, vectors, strict=True):
                    self._cache[text] = vector.clone()
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        with self._lock:
            rows = [self._cache.get(t, None) for t in texts]
        if any(row is None for row in rows):  # evicted meanwhile by a concurrent caller
            return self._encode_uncached(texts)
        return torch.stack([row for row in rows if row is not None]) if rows else torch.empty(0, self.dim)

    def _encode_uncached(self, texts: Sequence[str]) -> torch.Tensor:
        with torch.inference_mode():
            vectors = self.model.encode(
                list(texts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
            )
        return vectors.detach().to("cpu", torch.float32)


_ENCODERS: dict[tuple[str, int, str], TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def load_encoder(
    name: str, max_seq_len: int = 512, device: str = "auto", cache_dir: Path | None = None
) -> TextEncoder:
    """Load (once per process) a built-in encoder, a local folder, or a hub id."""
    resolved_device = resolve_device(device)
    key = (name, max_seq_len, resolved_device)
    with _ENCODERS_LOCK:
        if key in _ENCODERS:
            return _ENCODERS[key]
        from sentence_transformers import SentenceTransformer

        folder = offline_encoder_folder(name, cache_dir or default_cache_dir())
        local = Path(name).expanduser()
        if folder is not None:
            target = str(folder)
        elif local.exists():
            target = str(local)
        elif name.count("/") == 1:
            target = name  # a hub id: works online or with a filled HF cache
        else:
            raise EncoderLoadError(
                f"encoder {name!r} not found: it is not a built-in encoder "
                f"({', '.join(sorted(OFFLINE_ENCODERS))}), not an existing folder, and not a hub id "
                "'org/name'"
            )
        try:
            model = SentenceTransformer(target, device=resolved_device)
        except OSError as error:
            raise EncoderLoadError(
                f"could not load encoder {name!r} ({error}); offline, use a built-in encoder "
                f"({', '.join(sorted(OFFLINE_ENCODERS))}) or a local folder"
            ) from error
        encoder = TextEncoder(name, model, max_seq_len)
        _ENCODERS[key] = encoder
        return encoder
