"""Learned single-decision routers, the baselines RouterBench and LLMRouterBench find hard to beat.

Both look only at the frozen embedding of the QUERY (the same encoder the HierRouter policy uses)
and pick one whole route (a sequence of 1..L members) up front:

- ``KNNRouter``: the route with the best mean reward among the k nearest train queries (cosine);
  k is chosen on held-out train items (``choose_k``), never on the test split.
- ``MLPRouter``: a small MLP predicting every route's quality Q and cost C from the embedding;
  the route with the best predicted Q − α·C wins.

Both keep Q and C apart rather than fitting a reward: one fitted router then serves every α, so a
whole cost–quality curve costs one fit. They need the recorded outcome tree of the train items
only: ``quality[i, r]`` and ``cost[i, r]`` of route ``r`` on item ``i``.

``calibrate_alpha`` is RouteLLM's ``calibrate_threshold`` for any of these: the α at which a router's
mean cost per query on train items meets a target.

Fitted on a recorded outcome tree (``fit_routers``): why these baselines matter — RouterBench,
LLMRouterBench and "well-tuned kNN" (arXiv 2505.12601) find that a kNN or MLP router over a frozen
query embedding is hard to beat, so a HierRouter claim means little until it stands next to them.
They read the stage-0 context c_0 the HierRouter policy takes its first decision in, encoded by the
same frozen sentence encoder (the shipped state embeddings hold exactly these vectors), and are
fitted on the TRAIN split's recorded tree only: the same Q and C (hence the same R = Q − α·C)
HierRouter is trained on. Only the kNN's k is chosen per α, on held-out train items.
``strategies.learned_strategies`` turns a fit into table rows; ``training.evaluation.curves`` into
curves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray

from hierrouter_graph.route import RouteState
from training.replay.store import StateEncoder
from training.replay.tree import OutcomeTree, Route
from training.tasks.items import Item

__all__ = [
    "DEFAULT_KS",
    "KNN",
    "MLP",
    "FittedRouters",
    "KNNRouter",
    "MLPRouter",
    "RouteChooser",
    "calibrate",
    "calibrate_alpha",
    "choose_k",
    "fit_routers",
    "outcome_matrices",
    "query_embeddings",
    "route_rewards",
    "stack",
]

FloatArray = NDArray[np.float64]
RouteChooser = Callable[[FloatArray, float], NDArray[np.intp]]
"""(query embeddings [n, d], α) → chosen route index per query."""


def route_rewards(quality: FloatArray, cost: FloatArray, alpha: float) -> FloatArray:
    """R = Q − α·C for every (item, route): the reward the HierRouter policy is trained on."""
    if quality.shape != cost.shape:
        raise ValueError(f"quality {quality.shape} and cost {cost.shape} must have the same shape")
    return quality - alpha * cost


def _unit(rows: FloatArray) -> FloatArray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def _check_fit(embeddings: FloatArray, quality: FloatArray, cost: FloatArray) -> None:
    if embeddings.ndim != 2 or quality.ndim != 2 or quality.shape != cost.shape:
        raise ValueError(
            f"expected embeddings [n, d] and quality/cost [n, routes], got {embeddings.shape}, "
            f"{quality.shape}, {cost.shape}"
        )
    if embeddings.shape[0] != quality.shape[0] or embeddings.shape[0] == 0:
        raise ValueError(f"{embeddings.shape[0]} embeddings for {quality.shape[0]} items (need >= 1, equal)")


@dataclass
class KNNRouter:
    """Route of best mean reward among the ``k`` nearest train queries (cosine similarity)."""

    k: int
    embeddings: FloatArray
    quality: FloatArray
    cost: FloatArray

    @classmethod
    def fit(cls, embeddings: FloatArray, quality: FloatArray, cost: FloatArray, k: int) -> KNNRouter:
        _check_fit(embeddings, quality, cost)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return cls(min(k, embeddings.shape[0]), _unit(embeddings), quality, cost)

    def neighbours(self, queries: FloatArray) -> NDArray[np.intp]:
        """[n, k] indices of the nearest train items, nearest first (ties: lower index)."""
        similarity = _unit(queries) @ self.embeddings.T
        order = np.argsort(-similarity, axis=1, kind="stable")
        return order[:, : self.k].astype(np.intp)

    def choose(self, queries: FloatArray, alpha: float) -> NDArray[np.intp]:
        rewards = route_rewards(self.quality, self.cost, alpha)
        mean = rewards[self.neighbours(queries)].mean(axis=1)  # [n, routes]
        return np.argmax(mean, axis=1).astype(np.intp)


class _Heads(torch.nn.Module):
    def __init__(self, dim: int, routes: int, hidden: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU())
        self.quality = torch.nn.Linear(hidden, routes)
        self.cost = torch.nn.Linear(hidden, routes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.quality(h), self.cost(h)


@dataclass
class MLPRouter:
    """Predicts each route's Q (logistic: task metrics live in [0, 1]) and C (scaled) per query."""

    net: _Heads
    cost_scale: float

    @classmethod
    def fit(
        cls,
        embeddings: FloatArray,
        quality: FloatArray,
        cost: FloatArray,
        *,
        hidden: int = 128,
        epochs: int = 300,
        lr: float = 1e-2,
        weight_decay: float = 1e-3,
        seed: int = 0,
    ) -> MLPRouter:
        """Full-batch Adam on BCE(Q) + MSE(C / scale); deterministic for a seed."""
        _check_fit(embeddings, quality, cost)
        scale = float(np.abs(cost).max()) or 1.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _Heads(embeddings.shape[1], quality.shape[1], hidden)
            x = torch.as_tensor(_unit(embeddings), dtype=torch.float32)
            q = torch.as_tensor(np.clip(quality, 0.0, 1.0), dtype=torch.float32)
            c = torch.as_tensor(cost / scale, dtype=torch.float32)
            optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
            for _ in range(epochs):
                q_logits, c_pred = net(x)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(q_logits, q)
                loss = loss + torch.nn.functional.mse_loss(c_pred, c)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return cls(net.eval(), scale)

    def predict(self, queries: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Predicted (quality, cost), each [n, routes]."""
        with torch.no_grad():
            q_logits, c_pred = self.net(torch.as_tensor(_unit(queries), dtype=torch.float32))
        return torch.sigmoid(q_logits).double().numpy(), c_pred.double().numpy() * self.cost_scale

    def choose(self, queries: FloatArray, alpha: float) -> NDArray[np.intp]:
        quality, cost = self.predict(queries)
        return np.argmax(route_rewards(quality, cost, alpha), axis=1).astype(np.intp)


def _holdout(n: int, fraction: float, seed: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    order = np.random.default_rng(seed).permutation(n)
    held = max(1, round(n * fraction))
    return np.sort(order[held:]).astype(np.intp), np.sort(order[:held]).astype(np.intp)


def choose_k(
    embeddings: FloatArray,
    quality: FloatArray,
    cost: FloatArray,
    alpha: float,
    ks: Sequence[int] = (5, 10, 20, 40),
    holdout: float = 0.25,
    seed: int = 0,
) -> tuple[int, dict[int, float]]:
    """The k whose router, fitted on the rest of the TRAIN items, earns the best mean reward on a
    held-out ``holdout`` share of them; returns it and every k's held-out reward (ties: smaller k)."""
    if embeddings.shape[0] < 2:
        raise ValueError("choose_k needs at least 2 train items (one to fit, one to hold out)")
    fit, held = _holdout(embeddings.shape[0], holdout, seed)
    rewards = route_rewards(quality, cost, alpha)
    scores: dict[int, float] = {}
    for k in ks:
        router = KNNRouter.fit(embeddings[fit], quality[fit], cost[fit], k)
        chosen = router.choose(embeddings[held], alpha)
        scores[k] = float(rewards[held, chosen].mean())
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores


def calibrate_alpha(
    choose: RouteChooser,
    embeddings: FloatArray,
    cost: FloatArray,
    target_cost: float,
    *,
    low: float = 1e-6,
    high: float = 10.0,
    steps: int = 40,
) -> float:
    """The α at which ``choose``'s mean cost per train query is closest to ``target_cost``
    (``calibrate`` over the router's mean cost)."""

    def mean_cost(alpha: float) -> float:
        chosen = choose(embeddings, alpha)
        return float(cost[np.arange(len(chosen)), chosen].mean())

    return calibrate(mean_cost, target_cost, low=low, high=high, steps=steps)


def calibrate(
    mean_cost: Callable[[float], float],
    target_cost: float,
    *,
    low: float = 1e-6,
    high: float = 10.0,
    steps: int = 40,
) -> float:
    """The α in [low, high] at which ``mean_cost(α)`` (a router's mean cost per query on TRAIN
    items at that α) is closest to ``target_cost``: RouteLLM's ``calibrate_threshold`` for any
    router that takes α — the kNN/MLP baselines, or one α-conditioned policy
    (``curves.calibrate_family``).

    Bisection on log α (mean cost falls as α grows, up to ties between routes). The result is the
    α of the searched grid whose cost is nearest the target, so a target outside what the router
    can reach returns the end of the range that comes closest.
    """
    if target_cost <= 0:
        raise ValueError(f"target_cost must be > 0, got {target_cost}")
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low}, high={high}")
    lo, hi = math.log(low), math.log(high)
    best_alpha, best_gap = low, math.inf
    for _ in range(steps):
        mid = (lo + hi) / 2
        spent = mean_cost(math.exp(mid))
        gap = abs(spent - target_cost)
        if gap < best_gap:
            best_alpha, best_gap = math.exp(mid), gap
        if spent > target_cost:
            lo = mid  # too expensive: weigh cost more
        else:
            hi = mid
    for edge in (low, high):
        gap = abs(mean_cost(edge) - target_cost)
        if gap < best_gap:
            best_alpha, best_gap = edge, gap
    return best_alpha


# ------------------------------------------------------------- fitted on a recorded tree

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
