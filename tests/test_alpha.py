"""α's rules (``hierrouter_graph.policy.alpha``): exact boundaries, the one tolerance, and a graph and a
server that report the same α for the same policy."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from hierrouter_graph import HierRouterGraph, ModelSpec, RouterConfig, RouterPolicy
from hierrouter_graph.policy.alpha import (
    ALPHA_TOLERANCE,
    AlphaError,
    check_alpha,
    check_alpha_range,
    resolve_alpha,
    same_alpha,
    serving_alpha,
    trained_alpha_of,
    within_alpha_range,
)
from hierrouter_graph.policy.encoder import TextEncoder
from hierrouter_graph.policy.protocol import FixedRoutePolicy, PolicyTraits
from hierrouter_graph.serve import RouterService, create_app
from hierrouter_graph.serve.protocol import APIError, parse_request

QUERY = [{"role": "user", "content": "What is seven times six?"}]
EPS = ALPHA_TOLERANCE


def test_the_tolerance_is_one_relative_billionth() -> None:
    assert ALPHA_TOLERANCE == 1e-9
    assert same_alpha(0.005, 0.005 * (1 + EPS / 2))
    assert not same_alpha(0.005, 0.005 * (1 + 2 * EPS))
    assert same_alpha(0.0, 0.0) and not same_alpha(0.0, 1e-300)
    assert not same_alpha(math.nan, math.nan) and not same_alpha(math.inf, math.inf)


def test_a_range_is_inside_its_bounds_stretched_by_the_tolerance() -> None:
    lo, hi = 0.05, 20.0
    assert within_alpha_range(lo, (lo, hi)) and within_alpha_range(hi, (lo, hi))
    assert within_alpha_range(lo * (1 - EPS / 2), (lo, hi)) and within_alpha_range(
        hi * (1 + EPS / 2), (lo, hi)
    )
    assert not within_alpha_range(lo * (1 - 2 * EPS), (lo, hi))
    assert not within_alpha_range(hi * (1 + 2 * EPS), (lo, hi))
    assert not within_alpha_range(math.nan, (lo, hi))


@pytest.mark.parametrize(
    "bad", [(0.0, 1.0), (1.0, 1.0), (2.0, 1.0), (-1.0, 1.0), (0.1, math.inf), (math.nan, 1.0)]
)
def test_a_valid_range_is_finite_with_zero_below_lo_below_hi(bad: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match=r"^alpha_range: expected \[lo, hi\] with 0 < lo < hi, got"):
        check_alpha_range(bad)
    with pytest.raises(ValidationError, match=r"alpha_range: expected \[lo, hi\] with 0 < lo < hi"):
        RouterConfig(models=[ModelSpec(name="m", source="offline:smollm2-135m")], alpha_range=bad)
    with pytest.raises(ValueError, match=r"^alpha_range: expected \[lo, hi\]"):
        RouterPolicy(["m"], encoder_name="e", embedding_dim=4, alpha_range=bad)


def test_a_valid_range_comes_back_as_floats_and_three_ends_are_refused() -> None:
    assert check_alpha_range([1, 2]) == (1.0, 2.0) and check_alpha_range(None) is None
    with pytest.raises(ValueError, match=r"got \[0.1, 1.0, 2.0\]"):
        check_alpha_range([0.1, 1.0, 2.0])


def test_the_config_default_alpha_must_lie_in_the_range_up_to_the_tolerance() -> None:
    spec = ModelSpec(name="m", source="offline:smollm2-135m")
    assert RouterConfig(models=[spec], alpha=0.05 * (1 - EPS / 2), alpha_range=(0.05, 20.0)).alpha < 0.05
    with pytest.raises(ValidationError, match=r"alpha: 0.049 is the default cost weight .* \[0.05, 20.0\]"):
        RouterConfig(models=[spec], alpha=0.049, alpha_range=(0.05, 20.0))


def test_resolve_serves_the_range_or_only_the_trained_alpha_naming_the_field() -> None:
    assert resolve_alpha(None, 0.3, (0.05, 20.0)) == 0.3
    assert resolve_alpha(20.0, 0.3, (0.05, 20.0)) == 20.0
    with pytest.raises(AlphaError) as outside:
        resolve_alpha(20.1, 0.3, (0.05, 20.0), field="options['alpha']")
    assert str(outside.value) == (
        "options['alpha']: alpha=20.1 is outside the range [0.05, 20] this policy was trained for"
    )
    assert resolve_alpha(0.5 * (1 + EPS / 2), 0.5, None) == 0.5  # the trained α itself, as stored
    with pytest.raises(
        AlphaError, match=r"^alpha: this policy was trained for alpha=0.5 only \(no alpha_range\)"
    ):
        resolve_alpha(0.5 * (1 + 2 * EPS), 0.5, None)
    with pytest.raises(AlphaError, match=r"^context.alpha: expected a number, got bool"):
        resolve_alpha(True, 0.5, None, field="context.alpha")
    with pytest.raises(AlphaError, match=r"pass alpha="):
        check_alpha(None, (0.05, 20.0))


def test_which_alpha_a_policy_was_trained_for_and_serves() -> None:
    assert trained_alpha_of({"training": {"alpha": 0.02}, "alpha": 9.0}) == 0.02
    assert trained_alpha_of({"alpha": 0.03}) == 0.03
    assert trained_alpha_of({"training": {}}) is None
    with pytest.raises(ValueError, match=r"training.alpha: expected a finite number >= 0, got 'x'"):
        trained_alpha_of({"training": {"alpha": "x"}})

    class Trained(PolicyTraits):
        trained_alpha = 0.02

    class Conditioned(Trained):
        alpha_range = (0.01, 1.0)

    assert serving_alpha(0.005, Trained()) == 0.02  # its files win over the config
    assert serving_alpha(0.005, Conditioned()) == 0.005  # the config's default, in its range
    assert serving_alpha(0.005, FixedRoutePolicy(["m"], ["m"])) == 0.005  # unknown: the config's


def test_a_hand_written_policy_without_the_traits_is_refused_at_the_door(tiny_config: RouterConfig) -> None:
    class Bare:
        pool = ("tiny-a", "tiny-b")

        def decide(self, context: str, stage: int, cost: float, **_: Any) -> Any:
            raise AssertionError("never asked")

    with pytest.raises(
        TypeError, match=r"Bare is not a RoutingPolicy, it lacks \['allow_stop', 'alpha_range', "
    ):
        HierRouterGraph(tiny_config, Bare())


def test_graph_and_server_report_the_alpha_the_policy_was_trained_for(
    tiny_specs: list[ModelSpec], encoder: TextEncoder, tmp_path: Path
) -> None:
    """The config says 0.005; the saved policy was trained at 0.02: both serve and report 0.02."""
    config = RouterConfig(models=tiny_specs, horizon=2, cache_dir=tmp_path / "cache")
    policy = RouterPolicy.for_encoder(config.model_names, encoder, horizon=2)
    folder = policy.save(tmp_path / "policy", extra={"training": {"alpha": 0.02}})

    router = HierRouterGraph(config, folder)
    assert router.policy.trained_alpha == 0.02 and router.alpha == 0.02
    with pytest.raises(AlphaError, match=r"^alpha: this policy was trained for alpha=0.02 only"):
        HierRouterGraph(config, folder, alpha=0.005)
    service = RouterService(router, max_concurrency=2)
    try:
        assert service.trained_alpha == router.alpha == 0.02
        with pytest.raises(ValueError, match=r"trained_alpha: 0.005 differs from the alpha=0.02"):
            RouterService(router, trained_alpha=0.005)
        with TestClient(create_app(service)) as client:
            ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
            assert ids == ["hierrouter", "hierrouter:alpha=0.02"]
            served = client.post("/v1/chat/completions", json={"model": "hierrouter", "messages": QUERY})
            assert served.json()["hierrouter"]["alpha"] == 0.02
            refused = client.post(
                "/v1/chat/completions", json={"model": "hierrouter:alpha=0.005", "messages": QUERY}
            )
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "unsupported_alpha"
    finally:
        service.close()
    assert router.invoke("What is seven times six?")["alpha"] == 0.02


def test_the_server_uses_the_same_tolerance_for_the_model_and_body_alpha() -> None:
    body = {"model": "hierrouter:alpha=0.5", "messages": QUERY, "alpha": 0.5 * (1 + EPS / 2)}
    assert parse_request(body, 0.5).alpha == 0.5
    with pytest.raises(APIError, match=r"alpha: .* contradicts the model's alpha=0.5"):
        parse_request({**body, "alpha": 0.5 * (1 + 2 * EPS)}, 0.5)
    with pytest.raises(APIError, match=r"alpha: this policy was trained for alpha=0.5 only") as refused:
        parse_request({"model": "hierrouter:alpha=0.6", "messages": QUERY}, 0.5)
    assert (refused.value.status, refused.value.param, refused.value.code) == (
        400,
        "model",
        "unsupported_alpha",
    )
