"""Hostile model-written code, scored through the project's own path, must stay contained.

Every probe below escaped the earlier rlimit-only sandbox when run as root (issue 16) or is one of
the probes that already held then. Each probe is written so that it PASSES its test
(``assert f() == 3``) only if the escape worked: containment means score 0.0. Each also checks,
from the host, that nothing happened (no file written, no connection, no process left, victim
alive), that the scoring process survived, and that no scratch folder was left in its TMPDIR.
They run once per isolation backend that works here (bubblewrap; the unshare fallback as root).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.training.hostile_support import (
    REPO,
    SECRET,
    SHIPPED_POLICY,
    assert_contained,
    backend,
    pids_with,
    score_probe,
    token,
)

__all__ = ["backend", "token"]  # fixtures used by this module's tests


def test_fork_loop_is_refused(tmp_path: Path, backend: str, token: str) -> None:
    code = f"""
        import os
        n = 0
        for _ in range(200):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                os.execv("/bin/sleep", ["sleep", "{token}"])
            n += 1
        print("forks", n)
        assert n >= 200, n
        def f(): return 3
        """
    assert_contained(score_probe(tmp_path, backend, code))
    # Even where forks are allowed (16 processes), the cap holds and every child dies with the run.
    outcome = score_probe(tmp_path, backend, code, mode="run", nproc=16)
    assert outcome.scorer_returncode == 0 and outcome.leftovers == []
    forks = int(outcome.report["stdout"].split()[1])
    assert forks <= 16
    assert outcome.report["passed"] is False
    assert pids_with(token) == []


def test_writes_outside_the_scratch_folder_fail(tmp_path: Path, backend: str, token: str) -> None:
    before = hashlib.sha256(SHIPPED_POLICY.read_bytes()).hexdigest()
    targets = [
        REPO / f"escape-{token}",
        tmp_path / f"escape-{token}",
        Path("/var/tmp") / f"escape-{token}",
        Path("/dev/shm") / f"escape-{token}",
        Path("/root") / f"escape-{token}",
        Path("/etc") / f"escape-{token}",
    ]
    code = f"""
        wrote = []
        for target in {[str(t) for t in targets]!r}:
            try:
                with open(target, "w") as fh:
                    fh.write("escaped")
                wrote.append(target)
            except OSError:
                pass
        try:
            open({str(SHIPPED_POLICY)!r}, "a").close()
            wrote.append("shipped policy")
        except OSError:
            pass
        assert wrote, "nothing written"
        def f(): return 3
        """
    assert_contained(score_probe(tmp_path, backend, code))
    assert [t for t in targets if t.exists()] == []
    assert hashlib.sha256(SHIPPED_POLICY.read_bytes()).hexdigest() == before


def test_etc_shadow_is_unreadable(tmp_path: Path, backend: str) -> None:
    code = """
        data = open("/etc/shadow").read()
        assert data
        def f(): return 3
        """
    assert_contained(score_probe(tmp_path, backend, code))


def test_the_scorers_environment_is_unreadable(tmp_path: Path, backend: str) -> None:
    code = f"""
        import os
        found = {SECRET!r} in str(dict(os.environ))
        for pid in {{os.getppid(), SCORER_PID, 1}}:
            try:
                found = found or {SECRET!r}.encode() in open(f"/proc/{{pid}}/environ", "rb").read()
            except OSError:
                pass
        assert found
        def f(): return 3
        """
    assert_contained(score_probe(tmp_path, backend, code))


def _libc_connect_code(port: int) -> str:
    return f"""
        import ctypes, os, struct
        libc = ctypes.CDLL(None, use_errno=True)
        def connect():
            fd = libc.socket(2, 1, 0)
            addr = struct.pack("H", 2) + struct.pack("!H", {port}) + bytes([127, 0, 0, 1]) + bytes(8)
            return fd >= 0 and libc.connect(fd, addr, len(addr)) == 0
        connected = connect()
        for pid in (os.getppid(), SCORER_PID, 1):
            try:
                ns = os.open(f"/proc/{{pid}}/ns/net", os.O_RDONLY)
            except OSError:
                continue
            if libc.setns(ns, 0) == 0:
                connected = connected or connect()
        assert connected
        def f(): return 3
        """


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_setns_back_into_the_host_network_fails(tmp_path: Path, backend: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        listener.settimeout(0.5)
        outcome = score_probe(tmp_path, backend, _libc_connect_code(listener.getsockname()[1]))
        with pytest.raises(TimeoutError):
            listener.accept()
    assert_contained(outcome)


def test_killing_the_parent_fails(tmp_path: Path, backend: str) -> None:
    code = """
        import os, signal
        killed = []
        for pid in (os.getppid(), SCORER_PID):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
        assert killed
        def f(): return 3
        """
    assert_contained(score_probe(tmp_path, backend, code))


def test_killing_the_process_group_fails(tmp_path: Path, backend: str) -> None:
    code = """
        import os, signal
        killed = []
        for pid in (os.getppid(), SCORER_PID):
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
        assert killed
        def f(): return 3
        """
    assert_contained(score_probe(tmp_path, backend, code))


def test_other_host_processes_are_invisible_and_unkillable(tmp_path: Path, backend: str) -> None:
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        code = f"""
            import os, signal
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
            print("pids", pids)
            try:
                os.kill({victim.pid}, signal.SIGKILL)
                killed = True
            except OSError:
                killed = False
            os.kill(-1, signal.SIGKILL)  # everything this process may signal (itself included)
            assert killed or len(pids) > 5
            def f(): return 3
            """
        assert_contained(score_probe(tmp_path, backend, code))
        visible = score_probe(tmp_path, backend, code.replace("os.kill(-1,", "(lambda *a: 0)("), mode="run")
        assert len(json.loads(visible.report["stdout"].split("pids", 1)[1].splitlines()[0])) <= 3
        assert victim.poll() is None, "the victim process was killed"
    finally:
        victim.kill()
        victim.wait()


def test_a_double_forked_daemon_does_not_outlive_the_run(tmp_path: Path, backend: str, token: str) -> None:
    code = f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "{token}"])
            os._exit(0)
        time.sleep(0.5)
        def f(): return 3
        assert f() == 3
        """
    outcome = score_probe(tmp_path, backend, code, mode="run", nproc=8)
    assert outcome.scorer_returncode == 0 and outcome.leftovers == []
    assert outcome.report["passed"] is True, outcome.report  # the daemon did start...
    time.sleep(0.2)
    assert pids_with(token) == []  # ...and is gone once the run returned


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_signalled_scorer_leaves_no_process_or_scratch(
    tmp_path: Path, backend: str, token: str, sig: signal.Signals
) -> None:
    scratch = tmp_path / "scorer-tmp"
    scratch.mkdir()
    probe = tmp_path / "probe.py"
    probe.write_text(f"import os\nos.execv('/bin/sleep', ['sleep', '{token}'])\n")
    env = dict(os.environ, TMPDIR=str(scratch), HIERROUTER_SANDBOX=backend, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "tests.training.hostile_scorer", str(probe), "run", "60", "0"]
    scorer = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not pids_with(token) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids_with(token), "the probe never started"
        scorer.send_signal(sig)
        scorer.wait(timeout=10)
        deadline = time.monotonic() + 5
        while pids_with(token) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids_with(token) == []
        assert list(scratch.iterdir()) == []
    finally:
        scorer.kill()
        scorer.wait()


@pytest.mark.parametrize(
    "ending",
    ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "import unittest\nunittest.main()"],
    ids=["sys.exit", "os._exit", "unittest.main"],
)
def test_exiting_before_the_tests_is_not_a_pass(tmp_path: Path, backend: str, ending: str) -> None:
    code = "def f(): return 2\n" + ending + "\n"
    assert_contained(score_probe(tmp_path, backend, code))
    run = score_probe(tmp_path, backend, code, mode="run")
    assert (run.report["passed"], run.report["reason"]) == (False, "incomplete")


def test_100mb_of_stdout_is_capped(tmp_path: Path, backend: str) -> None:
    code = """
        import sys
        for _ in range(100):
            sys.stdout.write("x" * (1 << 20))
        def f(): return 3
        """
    assert_contained(score_probe(tmp_path, backend, code, timeout_s=20))
    run = score_probe(tmp_path, backend, code, mode="run", timeout_s=20)
    assert run.report["passed"] is False
    assert len(run.report["stdout"]) <= 4000
    assert "BrokenPipeError" in run.report["stderr"] or run.report["reason"] != "ok"


def test_raising_its_own_limits_and_privileges_fails(tmp_path: Path, backend: str) -> None:
    code = """
        import os, resource
        raised = []
        for name in ("RLIMIT_NPROC", "RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_FSIZE"):
            which = getattr(resource, name)
            try:
                resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                raised.append(name)
            except (ValueError, OSError):
                pass
        caps = [line.split()[1] for line in open("/proc/self/status") if line.startswith("Cap")]
        print("uid", os.getuid(), "caps", caps, "raised", raised)
        assert raised or os.getuid() == 0 or any(int(c, 16) for c in caps)
        def f(): return 3
        """
    assert_contained(score_probe(tmp_path, backend, code))
    run = score_probe(tmp_path, backend, code, mode="run")
    assert "uid 65534 caps ['0000000000000000'" in run.report["stdout"]


def test_infinite_loop_times_out(tmp_path: Path, backend: str) -> None:
    assert_contained(score_probe(tmp_path, backend, "while True:\n    pass\n", timeout_s=2))


def test_10gb_allocation_fails(tmp_path: Path, backend: str) -> None:
    code = "x = bytearray(10 * 1024**3)\ndef f(): return 3\n"
    assert_contained(score_probe(tmp_path, backend, code))


def test_no_isolation_means_refusal_not_root(tmp_path: Path) -> None:
    """Without bwrap/unshare on PATH the scorer refuses, names what to install, and runs nothing."""
    marker = tmp_path / "ran"
    probe = tmp_path / "probe.py"
    probe.write_text(f"open({str(marker)!r}, 'w').write('x')\ndef f(): return 3\n")
    env = {k: v for k, v in os.environ.items() if k != "HIERROUTER_SANDBOX"}
    env.update(PATH=str(tmp_path), PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
    cmd = [sys.executable, "-m", "tests.training.hostile_scorer", str(probe), "score", "5"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "SandboxUnavailable" in proc.stderr
    assert "apt-get install -y bubblewrap" in proc.stderr
    assert "HIERROUTER_SANDBOX=unisolated" in proc.stderr
    assert not marker.exists()
