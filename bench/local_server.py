"""A server process on a free loopback port: start-up wait and shutdown, shared by the server
benchmark (``bench/server_load.py``) and the server tests (``tests/test_server.py`` and others).

Why one place: both start ``langgraph dev`` or ``hierrouter serve`` offline, poll a readiness URL
while watching the process, and must never leave a server running when they stop.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["OFFLINE_ENV", "free_port", "stop", "wait_ready"]

OFFLINE_ENV = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGSMITH_TRACING": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
"""Environment of an offline ``langgraph dev``: no analytics, version check, tracing or hub calls."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_ready(
    process: subprocess.Popen[Any],
    log: Path,
    url: str,
    timeout: float,
    *,
    name: str = "the server",
    error: type[BaseException] = AssertionError,
) -> None:
    """Return once ``url`` answers 200; raise ``error`` with the log's tail if the process exits or
    ``timeout`` seconds pass first."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise error(f"{name} exited early:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise error(f"{name} not ready after {timeout}s:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """Terminate, wait up to ``timeout`` seconds, then kill (and reap) a process still running."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
