"""Serving sends hops of different requests to an endpoint member side by side, never one by one.

A REAL scripted loopback server (``bench/fleet_server.py``, fixed latency) counts the requests it
has in flight: ``graph.batch`` and the OpenAI-compatible app must fill the member's
``endpoint.max_concurrency`` exactly, and never exceed it.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from bench.fleet_server import FleetState, endpoint_spec, serve_in_thread
from hierrouter_graph import FixedRoutePolicy, HierRouterGraph, RouterConfig
from hierrouter_graph.serve import RouterService, create_app

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])  # loopback only: the test's own server


@pytest.fixture
def fleet() -> Iterator[tuple[str, FleetState]]:
    with serve_in_thread(0.2, slots=64) as served:  # slow enough for every thread to start first
        yield served


def _graph(url: str, slots: int) -> HierRouterGraph:
    config = RouterConfig(models=[endpoint_spec("alpha", url, max_concurrency=slots)], horizon=2)
    return HierRouterGraph(config, FixedRoutePolicy(config.model_names, ["alpha"]))


def test_graph_batch_fills_the_endpoint_slots(fleet: tuple[str, FleetState]) -> None:
    url, server = fleet
    graph = _graph(url, 8)
    assert graph.pool_width() == 8
    out = graph.batch([f"query {i}" for i in range(8)])
    # LangChain's default (min(32, cores + 4) threads: 6 on 2 cores) would have held it lower
    assert server.max_in_flight == 8 and server.replies == 16
    assert [len(o["trace"]) for o in out] == [2] * 8


def test_graph_batch_never_exceeds_max_concurrency(fleet: tuple[str, FleetState]) -> None:
    url, server = fleet
    graph = _graph(url, 3)
    graph.batch([f"query {i}" for i in range(9)], {"max_concurrency": 9})  # more threads than slots
    assert server.max_in_flight == 3 and server.replies == 18


def test_openai_app_serves_concurrent_requests_to_an_endpoint_together(fleet: tuple[str, FleetState]) -> None:
    url, server = fleet
    service = RouterService(_graph(url, 6), max_concurrency=16)
    body = {"model": "hierrouter", "messages": [{"role": "user", "content": "q"}]}
    with TestClient(create_app(service)) as client, ThreadPoolExecutor(6) as senders:
        bodies = [{**body, "messages": [{"role": "user", "content": f"query {i}"}]} for i in range(6)]
        responses = list(senders.map(lambda b: client.post("/v1/chat/completions", json=b), bodies))
    service.close()
    assert [r.status_code for r in responses] == [200] * 6
    assert server.max_in_flight == 6 and server.replies == 12
