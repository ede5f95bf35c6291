"""The learned single-hop baselines fitted on a recorded outcome tree: what kNN and MLP rows need.

Why: RouterBench, LLMRouterBench and "well-tuned kNN" (arXiv 2505.12601) find that a kNN or MLP
router over a frozen query embedding is hard to beat; a HierRouter claim means little until it
stands next to them. Both routers (``training.evaluation.learned_routers``) read only the
embedding of the QUERY —
the stage-0 context c_0 the HierRouter policy takes its first decision in, encoded by the same
frozen sentence encoder (the shipped state embeddings hold exactly these vectors) — and pick one
whole route of length 1..L up front. They are fitted on the TRAIN split's recorded tree only:
quality Q and cost C of every candidate route of every train item, the same Q and C (hence the
same R = Q − α·C) HierRouter is trained on.

Q and C are kept apart, so one fit serves every α (a whole cost–quality curve); only the kNN's k is
chosen per α, on held-out train items (``baselines.choose_k``), never on test.
``strategies.learned_strategies`` turns a fit into table rows; ``training.evaluation.curves`` into curves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hierrouter_graph.route import RouteState
from training.evaluation.learned_routers import FloatArray, KNNRouter, MLPRouter, choose_k
from training.replay.store import StateEncoder
from training.replay.tree import OutcomeTree, Route
from training.tasks.items import Item

__all__ = [
    "DEFAULT_KS",
    "KNN",
    "MLP",
    "FittedRouters",
    "fit_routers",
    "outcome_matrices",
    "query_embeddings",
    "stack",
]

KNN = "kNN router"
MLP = "MLP router"
DEFAULT_KS = (5, 10, 20, 40)
"""RouterBench's k = 5/10/40, plus 20; the one used is chosen on held-out train items per α."""


def query_embeddings(
    encoder: StateEncoder, items: Sequence[Item], batch_size: int = 256
) -> dict[str, FloatArray]:
    """Item id → the encoder's vector of the item's stage-0 context (what the policy sees first).

    Through a ``CachedEncoder`` these are looked up in the replay store (the shipped state
    embeddings include every recorded item's stage-0 context), so nothing is re-encoded.
    """
    texts = list(dict.fromkeys(RouteState.start(item.prompt).context for item in items))
    vectors: dict[str, FloatArray] = {}
    for start in range(0, len(texts), batch_size):
        part = texts[start : start + batch_size]
        encoded = encoder.encode(part)
        array = (
            encoded.detach().to(torch.float64).cpu().numpy() if isinstance(encoded, torch.Tensor) else encoded
        )
        vectors.update(zip(part, np.asarray(array, dtype=np.float64), strict=True))
    return {item.id: vectors[RouteState.start(item.prompt).context] for item in items}


def stack(embeddings: Mapping[str, FloatArray], items: Sequence[Item]) -> FloatArray:
    """[n, d] rows of ``embeddings`` in item order (KeyError naming the first missing item)."""
    missing = [item.id for item in items if item.id not in embeddings]
    if missing:
        raise KeyError(f"no query embedding for {len(missing)} items, e.g. {missing[:3]}")
    return np.stack([embeddings[item.id] for item in items]).astype(np.float64)


def outcome_matrices(
    tree: OutcomeTree, items: Sequence[Item], candidates: Sequence[Route]
) -> tuple[FloatArray, FloatArray]:
    """(quality, cost), each [n items, n candidates]: what a route-level router is fitted on."""
    quality = np.array([[tree[item.id][route].quality for route in candidates] for item in items])
    cost = np.array([[tree[item.id][route].cost for route in candidates] for item in items])
    return quality.astype(np.float64), cost.astype(np.float64)


@dataclass
class FittedRouters:
    """Both learned routers fitted on one train tree; ``routes`` answers for any α."""

    candidates: tuple[Route, ...]
    embeddings: FloatArray
    quality: FloatArray
    cost: FloatArray
    mlp: MLPRouter
    ks: tuple[int, ...] = DEFAULT_KS
    seed: int = 0
    _knn: dict[float, tuple[KNNRouter, dict[int, float]]] = field(default_factory=dict, repr=False)

    def knn(self, alpha: float) -> tuple[KNNRouter, dict[int, float]]:
        """The kNN router at ``alpha``, its k chosen on held-out train items, and every k's score."""
        if alpha not in self._knn:
            k, scores = choose_k(self.embeddings, self.quality, self.cost, alpha, self.ks, seed=self.seed)
            self._knn[alpha] = (KNNRouter.fit(self.embeddings, self.quality, self.cost, k), scores)
        return self._knn[alpha]

    def routes(self, kind: str, alpha: float, queries: FloatArray) -> list[Route]:
        """The route ``kind`` (``KNN`` or ``MLP``) takes for each query embedding at ``alpha``."""
        if kind == KNN:
            chosen = self.knn(alpha)[0].choose(queries, alpha)
        elif kind == MLP:
            chosen = self.mlp.choose(queries, alpha)
        else:
            raise ValueError(f"kind must be {KNN!r} or {MLP!r}, got {kind!r}")
        return [self.candidates[int(index)] for index in chosen]


def fit_routers(
    tree: OutcomeTree,
    items: Sequence[Item],
    embeddings: Mapping[str, FloatArray],
    candidates: Sequence[Route],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    seed: int = 0,
) -> FittedRouters:
    """Fit the kNN data and the MLP on the (train) ``items`` of ``tree``; deterministic for ``seed``."""
    if not items:
        raise ValueError("fitting the learned routers needs at least one train item")
    x = stack(embeddings, items)
    quality, cost = outcome_matrices(tree, items, candidates)
    mlp = MLPRouter.fit(x, quality, cost, seed=seed)
    return FittedRouters(tuple(candidates), x, quality, cost, mlp, tuple(ks), seed)
