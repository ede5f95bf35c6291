"""How training reads the replay store: ``CachedEncoder`` (each context encoded once, ever) and
``ReplayOnlyCache`` (replay, never generate: a miss is a ``ReplayMissError``).

Why apart from the store (``store.py``): the store is the durable file and its schema; these are
the two views a training run takes of it, and every reader (env, tree, evaluation, CLIs) uses them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

from hierrouter_graph.hop import CachedReply, ReplyCache
from training.replay.store import ReplayStore, StateEncoder

__all__ = [
    "CachedEncoder",
    "ReplayMissError",
    "ReplayOnlyCache",
]


class CachedEncoder:
    """A ``TextEncoder`` that looks in the replay store (and a small memory LRU) first.

    Contexts are deterministic functions of the recorded replies, so each one is encoded once,
    ever: later episodes, epochs and training runs read the vector back instead of running the
    encoder. Vectors are stored exactly as the wrapped encoder returned them (float32).
    """

    def __init__(self, encoder: StateEncoder, store: ReplayStore, memory_size: int = 65536) -> None:
        self.encoder = encoder
        self.store = store
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._memory_size = memory_size
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def _remember(self, text: str, vector: torch.Tensor) -> None:
        self._memory[text] = vector
        self._memory.move_to_end(text)
        while len(self._memory) > self._memory_size:
            self._memory.popitem(last=False)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            return torch.empty(0, self.dim)
        with self._lock:
            found = {t: self._memory[t] for t in dict.fromkeys(texts) if t in self._memory}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            found.update(self.store.get_embeddings(self.name, missing))
            fresh = [t for t in missing if t not in found]
            if fresh:
                vectors = self.encoder.encode(fresh).detach().to("cpu", torch.float32)
                self.store.put_embeddings(self.name, fresh, vectors)
                found.update({t: vectors[i].clone() for i, t in enumerate(fresh)})
        with self._lock:
            for text, vector in found.items():
                self._remember(text, vector)
        return torch.stack([found[t] for t in texts])


class ReplayMissError(LookupError):
    """A hop is not in the replay store and live generation was not allowed."""


class ReplayOnlyCache:
    """A ``ReplyCache`` that replays and never lets the hop generate.

    Why: training and evaluating from a recorded outcome tree should be pure replay; a miss means
    the store was recorded for other items, prompts or generation settings, and silently
    generating would turn a minutes-long run into hours. ``--live`` allows generation (and records
    it) instead. It is also the probe of "is this hop recorded?" (``training.replay.tree.complete_items``):
    the key is built by the hop's own code, so it can never disagree with ``run_hop``.
    """

    def __init__(self, store: ReplyCache) -> None:
        self.store = store

    def get(self, fingerprint: str, prompt: str) -> CachedReply | None:
        hit = self.store.get(fingerprint, prompt)
        if hit is None:
            raise ReplayMissError(
                f"hop not in the replay store (model fingerprint {fingerprint[:80]!r}); record the "
                "outcome tree first (python training/record.py --split train ...) with the same "
                "config and items, or pass --live to generate missing hops"
            )
        return hit

    def put(self, fingerprint: str, prompt: str, reply: CachedReply) -> None:  # pragma: no cover
        raise ReplayMissError("ReplayOnlyCache never stores: the hop should not have generated")
