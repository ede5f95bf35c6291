"""kNN and MLP routers recover a query-dependent best route; calibration meets a cost target."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.learned_routers import KNNRouter, MLPRouter, calibrate_alpha, choose_k, route_rewards

# Routes: 0 = cheap member alone, 1 = expensive member alone, 2 = cheap then expensive.
COST = np.array([1.0, 10.0, 11.0])


def _scripted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two kinds of query: 'easy' ones the cheap member solves, 'hard' ones only the expensive one.

    The kind is readable from the embedding (its first coordinate's sign), as a topic would be.
    """
    rng = np.random.default_rng(seed)
    hard = rng.random(n) < 0.5
    embeddings = rng.normal(size=(n, 8)) * 0.3
    embeddings[:, 0] = np.where(hard, 1.0, -1.0)
    quality = np.zeros((n, 3))
    quality[:, 0] = np.where(hard, 0.0, 1.0)
    quality[:, 1] = 1.0
    quality[:, 2] = 1.0
    cost = np.tile(COST, (n, 1))
    return embeddings, quality, cost


@pytest.mark.parametrize("router_kind", ["knn", "mlp"])
def test_learned_routers_recover_the_query_dependent_best_route(router_kind: str) -> None:
    train_x, train_q, train_c = _scripted(200, seed=1)
    test_x, test_q, test_c = _scripted(100, seed=2)
    if router_kind == "knn":
        router: KNNRouter | MLPRouter = KNNRouter.fit(train_x, train_q, train_c, k=10)
    else:
        router = MLPRouter.fit(train_x, train_q, train_c, seed=0)
    alpha = 0.01  # quality 1 is worth more than 10 cost units: hard → expensive, easy → cheap
    chosen = router.choose(test_x, alpha)
    best = np.argmax(route_rewards(test_q, test_c, alpha), axis=1)
    assert (chosen == best).all()
    assert set(chosen.tolist()) == {0, 1}
    assert (router.choose(test_x, 1.0) == 0).all()  # cost dominates: always the cheap route


def test_knn_neighbours_are_the_nearest_by_cosine() -> None:
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    router = KNNRouter.fit(train, np.zeros((3, 1)), np.zeros((3, 1)), k=2)
    assert router.neighbours(np.array([[2.0, 0.0]])).tolist() == [[0, 2]]


def test_choose_k_uses_only_train_items_and_reports_every_k() -> None:
    x, q, c = _scripted(120, seed=3)
    k, scores = choose_k(x, q, c, alpha=0.01, ks=(1, 5, 40))
    assert set(scores) == {1, 5, 40}
    assert scores[k] == max(scores.values())


def test_calibrated_alpha_meets_the_cost_target_within_5_percent() -> None:
    x, q, c = _scripted(200, seed=4)
    rng = np.random.default_rng(0)
    q[:, 2] = rng.random(200)  # a spread of break-even α so the mean cost falls smoothly with α
    q[:, 1] = q[:, 2] / 2
    router = KNNRouter.fit(x, q, c, k=1)
    target = 5.0
    alpha = calibrate_alpha(router.choose, x, c, target)
    chosen = router.choose(x, alpha)
    spent = c[np.arange(200), chosen].mean()
    assert abs(spent - target) <= 0.05 * target


def test_shapes_are_checked_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="embeddings for"):
        KNNRouter.fit(np.zeros((3, 2)), np.zeros((4, 1)), np.zeros((4, 1)), k=1)
    with pytest.raises(ValueError, match="same shape"):
        route_rewards(np.zeros((2, 2)), np.zeros((2, 3)), 0.1)
