"""A real ``langgraph dev`` server on a free loopback port, driven through its HTTP API."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.local_server import OFFLINE_ENV, free_port, stop, wait_ready
from hierrouter_graph import RouterConfig

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.enable_socket]


def test_langgraph_dev_serves_the_graph(tiny_config: RouterConfig, tmp_path: Path) -> None:
    cli = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or shutil.which("langgraph")
    assert cli, "langgraph-cli[inmem] is a dev dependency"
    config_file = tmp_path / "router.yaml"
    tiny_config.to_file(config_file)
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, **OFFLINE_ENV, "HIERROUTER_CONFIG": str(config_file)}
    with log.open("w") as sink:
        process = subprocess.Popen(
            [cli, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_ready(process, log, f"http://127.0.0.1:{port}/ok", 120, name="langgraph dev")
        assert re.search(rf"127\.0\.0\.1:{port}", log.read_text()), "server must use the port we chose"
        base = f"http://127.0.0.1:{port}"
        assistants = httpx.post(
            f"{base}/assistants/search", json={"graph_id": "hierrouter"}, timeout=10
        ).json()
        assert [a["graph_id"] for a in assistants] == ["hierrouter"]
        thread = httpx.post(f"{base}/threads", json={}, timeout=10).json()["thread_id"]
        response = httpx.post(
            f"{base}/threads/{thread}/runs/wait",
            json={"assistant_id": "hierrouter", "input": {"query": "What is seven times six?"}},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        out = response.json()
        assert [h["stage"] for h in out["trace"]] == [0, 1]
        assert all(h["model"] in ("tiny-a", "tiny-b") for h in out["trace"])
        assert out["cost"] == pytest.approx(sum(h["cost"] for h in out["trace"]))
        assert out["answer"] == out["trace"][-1]["reply"]
        state = httpx.get(f"{base}/threads/{thread}/state", timeout=10).json()
        assert state["values"]["trace"] == out["trace"]  # checkpointed by the server
        drawn = httpx.get(f"{base}/assistants/{assistants[0]['assistant_id']}/graph", timeout=10).json()
        assert {n["id"] for n in drawn["nodes"]} >= {"router", "tiny-a", "tiny-b", "finalize"}
    finally:
        stop(process)
