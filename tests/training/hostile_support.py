"""What every hostile-code test needs: the backends that work here, a throwaway scorer process,
and the containment checks made from the host (tests/training/test_sandbox_hostile.py and
tests/training/test_sandbox_side_doors.py)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hierrouter_graph.sandbox import isolation_summary

REPO = Path(__file__).resolve().parents[2]
SHIPPED_POLICY = REPO / "hierrouter_graph" / "default_policy" / "policy.json"
SECRET = "hostile-suite-secret-" + secrets.token_hex(4)


def available(backend: str) -> bool:
    old = os.environ.get("HIERROUTER_SANDBOX")
    os.environ["HIERROUTER_SANDBOX"] = backend
    try:
        return isolation_summary()["backend"] == backend
    finally:
        if old is None:
            del os.environ["HIERROUTER_SANDBOX"]
        else:
            os.environ["HIERROUTER_SANDBOX"] = old


@pytest.fixture(params=["bwrap", "unshare"], scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    if not available(request.param):
        pytest.skip(f"the {request.param} backend does not work here (see docs/security.md)")
    return str(request.param)


@dataclass
class Outcome:
    scorer_returncode: int
    report: dict[str, Any]
    stderr: str
    leftovers: list[str]


def pids_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture()
def token() -> Iterator[str]:
    value = f"4{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"  # a unique `sleep` argument
    yield value
    for pid in pids_with(value):  # never leave a stray process behind, even on failure
        os.kill(pid, signal.SIGKILL)


def score_probe(
    tmp_path: Path, backend: str, code: str, mode: str = "score", timeout_s: float = 5.0, nproc: int = 0
) -> Outcome:
    scratch = tmp_path / "scorer-tmp"
    scratch.mkdir(exist_ok=True)
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(code))
    env = dict(os.environ, TMPDIR=str(scratch), PROBE_SECRET=SECRET, HIERROUTER_SANDBOX=backend)
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", "tests.training.hostile_scorer", str(probe), mode, str(timeout_s)]
    cmd.append(str(nproc))
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, start_new_session=True
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    leftovers = sorted(p.name for p in scratch.iterdir())
    return Outcome(proc.returncode, report, proc.stderr, leftovers)


def assert_contained(outcome: Outcome) -> None:
    assert outcome.scorer_returncode == 0, f"the scorer died: {outcome.stderr[-2000:]}"
    assert outcome.leftovers == []
    if "score" in outcome.report:
        assert outcome.report["score"] == 0.0, "the probe's escape worked"
        assert outcome.report["isolation"]["dropped_privileges"] is True
