"""Endpoint members against a REAL ``transformers serve`` on a free loopback port.

The server serves the tiny random test model (``tests/tiny_models.py``), so it is up in seconds.
A mixed pool (a local tiny model + the served one) answers through the graph, and the remote hop's
tokens and price are checked against the server's own usage report; a dead URL and a server that
never answers must fail fast, or fall back, per policy. Sockets are enabled for 127.0.0.1 only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import HumanMessage
from transformers import AutoTokenizer

from bench.local_server import free_port, stop
from hierrouter_graph import FixedRoutePolicy, HierRouterGraph, ModelSpec, RemoteModelError, RouterConfig
from hierrouter_graph.members.pool import TokenizerCounter

# allow_hosts alone (no enable_socket, which would lift every restriction): loopback only
pytestmark = [pytest.mark.integration, pytest.mark.allow_hosts(["127.0.0.1"])]

HOST = "127.0.0.1"
SERVED_RATE = 0.003
LOCAL_RATE = 0.001  # tiny-a's base_rate in conftest
READY_TIMEOUT_S = 180  # generous: startup is import-bound and slow on busy CPUs


@dataclass
class _Server:
    process: subprocess.Popen[bytes]
    url: str
    folder: Path
    log: Path


@pytest.fixture(scope="module", autouse=True)
def _server(tiny_folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    """``transformers serve`` pinned to the tiny-b folder, started with the module (autouse) so it
    boots while the tests that need no server run; ``served`` waits for it."""
    cli = Path(sys.executable).parent / "transformers"
    assert cli.is_file(), "the `transformers` CLI (transformers[serving], a dev dependency) is missing"
    folder = tiny_folders["tiny-b"]
    workdir = tmp_path_factory.mktemp("serve")
    (workdir / "hub").mkdir()
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_CACHE": str(workdir / "hub"),  # /v1/models answers 500 without an existing cache dir
    }
    log = workdir / "serve.log"
    command = [str(cli), "serve", str(folder), "--host", HOST, "--port", str(port), "--device", "cpu"]
    with log.open("w") as sink:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield _Server(process, f"http://{HOST}:{port}", folder, log)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def served(_server: _Server) -> tuple[str, Path]:
    """(base URL, served folder) once ``/health`` answers (~8 s on idle cores, far more on busy ones)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if _server.process.poll() is not None:
            raise AssertionError(f"transformers serve exited early:\n{_server.log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{_server.url}/health", timeout=2).status_code == 200:
                return _server.url, _server.folder
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            tail = _server.log.read_text()[-4000:]
            raise AssertionError(f"transformers serve not ready after {READY_TIMEOUT_S} s:\n{tail}")
        time.sleep(0.3)


def _remote_spec(name: str, url: str, source: str, **endpoint: object) -> ModelSpec:
    block = {"url": url, "timeout_s": 30, "max_retries": 2, "backoff_s": 0.05, **endpoint}
    return ModelSpec(name=name, source=source, base_rate=SERVED_RATE, max_new_tokens=8, endpoint=block)


def test_a_dead_url_fails_fast_naming_model_and_url(tiny_specs: list[ModelSpec], tmp_path: Path) -> None:
    dead = f"http://{HOST}:{free_port()}"  # nothing listens there
    config = RouterConfig(
        models=[tiny_specs[0], _remote_spec("dead", dead, "org/Dead-1B")], horizon=1, cache_dir=tmp_path
    )
    graph = HierRouterGraph(config, FixedRoutePolicy(config.model_names, ["dead"]))
    start = time.monotonic()
    with pytest.raises(RemoteModelError) as raised:
        graph.invoke("What is seven times six?")
    elapsed = time.monotonic() - start
    assert (raised.value.model, raised.value.url, raised.value.attempts) == ("dead", dead, 3)
    assert f"'dead' at {dead}" in str(raised.value) and "cannot connect" in str(raised.value)
    assert elapsed < 5, f"a refused connection must fail fast, took {elapsed:.2f} s"
    print(f"\ndead URL failed after 3 attempts in {elapsed:.2f} s")


def test_a_dead_url_falls_back_and_charges_the_fallback(tiny_specs: list[ModelSpec], tmp_path: Path) -> None:
    dead = f"http://{HOST}:{free_port()}"
    remote = _remote_spec("dead", dead, "org/Dead-1B", on_error="fallback", fallback_model="tiny-a")
    config = RouterConfig(models=[tiny_specs[0], remote], horizon=1, cache_dir=tmp_path)
    out = HierRouterGraph(config, FixedRoutePolicy(config.model_names, ["dead"])).invoke("Largest planet?")
    (hop,) = out["trace"]
    assert (hop["model"], hop["fallback_from"]) == ("tiny-a", "dead")
    assert dead in hop["error"] and "cannot connect" in hop["error"]
    assert hop["cost"] == pytest.approx(LOCAL_RATE * (hop["tokens_in"] + hop["tokens_out"]))
    assert out["answer"] == hop["reply"]


class _SilentServer:
    """Accepts connections on a loopback port and never answers: a hung inference server."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.url = f"http://{HOST}:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except TimeoutError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        for conn in [*self.held, self.sock]:
            conn.close()


def test_a_server_that_never_answers_times_out(tiny_specs: list[ModelSpec], tmp_path: Path) -> None:
    silent = _SilentServer()
    try:
        spec = _remote_spec("hung", silent.url, "org/Hung-1B", timeout_s=0.5, max_retries=1)
        config = RouterConfig(models=[tiny_specs[0], spec], horizon=1, cache_dir=tmp_path)
        graph = HierRouterGraph(config, FixedRoutePolicy(config.model_names, ["hung"]))
        start = time.monotonic()
        with pytest.raises(RemoteModelError, match=r"'hung' .* 2 attempts: timed out \(timeout_s=0.5"):
            graph.invoke("q")
        elapsed = time.monotonic() - start
    finally:
        silent.close()
    assert 1.0 <= elapsed < 4, f"2 attempts x 0.5 s expected, took {elapsed:.2f} s"
    assert len(silent.held) == 2
    print(f"\nhung server: timed out after 2 attempts in {elapsed:.2f} s")


def test_mixed_pool_prices_the_remote_hop_from_the_servers_usage(
    served: tuple[str, Path], tiny_specs: list[ModelSpec], tmp_path: Path
) -> None:
    url, folder = served
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # endpoint calls must work in offline mode
    remote = _remote_spec("remote", url, str(folder), model=str(folder))
    config = RouterConfig(models=[tiny_specs[0], remote], horizon=2, cache_dir=tmp_path)
    graph = HierRouterGraph(config, FixedRoutePolicy(config.model_names, ["tiny-a", "remote"]))
    start = time.monotonic()
    out = graph.invoke("What is seven times six?")
    elapsed = time.monotonic() - start
    local, hop = out["trace"]
    assert (local["model"], hop["model"]) == ("tiny-a", "remote")
    assert "fallback_from" not in hop

    # the server's own usage report for the very same request (greedy, so the same reply)
    request = {
        "model": str(folder),
        "messages": [{"role": "user", "content": hop["prompt"]}],
        "max_tokens": 8,
        "temperature": 0.0,
    }
    report = httpx.post(f"{url}/v1/chat/completions", json=request, timeout=30).json()
    usage = report["usage"]
    assert (hop["tokens_in"], hop["tokens_out"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert hop["reply"] == report["choices"][0]["message"]["content"]
    assert 0 < hop["tokens_out"] <= 8
    # and the prompt count is what the served model's own tokenizer says
    counter = TokenizerCounter(AutoTokenizer.from_pretrained(str(folder)))
    assert hop["tokens_in"] == counter.count_prompt([HumanMessage(hop["prompt"])])
    assert hop["cost"] == pytest.approx(SERVED_RATE * (hop["tokens_in"] + hop["tokens_out"]))
    assert out["cost"] == pytest.approx(local["cost"] + hop["cost"])
    assert local["reply"] in hop["prompt"]  # the remote model got the local model's reply as context
    print(f"\nmixed pool, 2 hops through a real server: {elapsed:.2f} s")
