"""The sandbox contains what model-written code may do: loop, allocate, write files, network."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

from hierrouter_graph.sandbox import (
    PlainDataError,
    SandboxLimits,
    SandboxResult,
    SandboxUnavailable,
    decode_plain,
    evaluate_in_sandbox,
    isolation_summary,
    run_python,
)


def test_correct_code_passes() -> None:
    result = run_python("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('ok')")
    assert result.passed
    assert result.reason == "ok"
    assert result.returncode == 0
    assert result.stdout == "ok\n"


def test_failing_assert_is_an_error_with_stderr() -> None:
    result = run_python("assert 1 == 2, 'boom'")
    assert not result.passed
    assert result.reason == "error"
    assert "AssertionError: boom" in result.stderr


def test_syntax_error_is_an_error() -> None:
    result = run_python("def f(:\n")
    assert (result.passed, result.reason) == (False, "error")
    assert "SyntaxError" in result.stderr


def test_infinite_loop_times_out_within_the_limit() -> None:
    result = run_python("while True:\n    pass", timeout_s=1.0)
    assert (result.passed, result.reason) == (False, "timeout")
    assert 0.9 <= result.duration_s < 3.0


def test_sleeping_child_processes_are_killed_with_the_group() -> None:
    code = "import subprocess, time\nsubprocess.Popen(['sleep', '30'])\ntime.sleep(30)"
    result = run_python(code, timeout_s=1.0)
    # "error" where the sandbox runs as an unprivileged user: RLIMIT_NPROC=0 forbids the fork.
    assert result.reason in ("timeout", "error")
    assert result.duration_s < 3.0


def test_cpu_limit_stops_busy_code_even_with_a_long_wall_clock() -> None:
    limits = SandboxLimits(timeout_s=30.0, cpu_seconds=1)
    result = run_python("while True:\n    pass", limits=limits)
    assert (result.passed, result.reason) == (False, "timeout")
    assert result.duration_s < 10.0


def test_huge_allocation_fails_with_memory() -> None:
    result = run_python("x = bytearray(10 * 1024**3)\nprint('allocated')")
    assert (result.passed, result.reason) == (False, "memory")
    assert "allocated" not in result.stdout


def test_sockets_are_blocked() -> None:
    code = textwrap.dedent(
        """
        import socket
        for attempt in (
            lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
            lambda: socket.create_connection(("127.0.0.1", 9), timeout=1),
            lambda: socket.getaddrinfo("example.com", 80),
        ):
            try:
                attempt()
            except OSError as exc:
                print("blocked:", exc)
            else:
                print("ALLOWED")
        import urllib.request
        urllib.request.urlopen("http://127.0.0.1:9/", timeout=1)
        """
    )
    result = run_python(code)
    assert not result.passed
    assert "ALLOWED" not in result.stdout
    assert result.stdout.count("blocked:") == 3
    assert "URLError" in result.stderr


def test_network_namespace_blocks_raw_sockets_when_available() -> None:
    if not isolation_summary()["network_namespace"]:
        pytest.skip("unshare --net is not available to this process")
    # ctypes bypasses the Python-level socket block: the system-call filter refuses the socket
    # itself (EPERM), and the namespace (read from /proc, no socket needed) has only loopback.
    code = textwrap.dedent(
        """
        import ctypes, ctypes.util
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        lines = open("/proc/self/net/dev").read().splitlines()[2:]
        print("interfaces", [line.split(":")[0].strip() for line in lines])
        fd = libc.socket(2, 1, 0)
        print("socket", fd, ctypes.get_errno())
        """
    )
    result = run_python(code)
    assert result.passed, result.stderr
    assert "interfaces ['lo']" in result.stdout
    assert "socket -1 1" in result.stdout  # EPERM from the seccomp filter


def test_relative_writes_land_in_a_temp_dir_that_is_removed() -> None:
    marker = f"sandbox-marker-{os.getpid()}-{threading.get_ident()}.txt"
    code = f"import os\nopen({marker!r}, 'w').write('x')\nprint(os.getcwd())\nprint(os.listdir('.'))"
    result = run_python(code)
    assert result.passed, result.stderr
    workdir = Path(result.stdout.splitlines()[0])
    assert workdir.is_relative_to(Path(tempfile.gettempdir()))
    assert workdir != Path.cwd()
    assert marker in result.stdout.splitlines()[1]
    assert not workdir.exists()
    assert not (Path.cwd() / marker).exists()


def test_environment_is_minimal_and_stdin_closed() -> None:
    code = (
        "import os, sys\nprint(sorted(os.environ))\nprint(repr(sys.stdin.read()))\nprint(sys.flags.isolated)"
    )
    os.environ["HIERROUTER_SECRET_FOR_TEST"] = "1"
    try:
        result = run_python(code)
    finally:
        del os.environ["HIERROUTER_SECRET_FOR_TEST"]
    assert result.passed, result.stderr
    env_line, stdin_line, isolated = result.stdout.splitlines()
    assert "HIERROUTER_SECRET_FOR_TEST" not in env_line
    assert stdin_line == "''"
    assert isolated == "1"


def test_output_is_truncated() -> None:
    limits = SandboxLimits(max_output_chars=100)
    result = run_python("print('x' * 100000)\nimport sys\nsys.stderr.write('e' * 5000)", limits=limits)
    assert result.passed
    assert len(result.stdout) <= 100
    assert len(result.stderr) <= 100


def test_concurrent_calls_are_independent() -> None:
    results: dict[int, SandboxResult] = {}

    def work(n: int) -> None:
        results[n] = run_python(f"import os\nopen('n.txt', 'w').write('{n}')\nprint(open('n.txt').read())")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(8))
    for n, result in results.items():
        assert result.passed, result.stderr
        assert result.stdout.strip() == str(n)


def test_an_interpreter_in_a_venv_under_tmp_still_runs(tmp_path: Path) -> None:
    """A clean clone in /tmp has its venv under the folder the sandbox mounts its scratch over."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    result = run_python("import sys\nprint(sys.prefix)", python=python)
    assert result.passed, result.stderr
    assert result.stdout.strip() == str(venv)


def test_the_documented_opt_out_runs_without_isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIERROUTER_SANDBOX", "unisolated")
    assert isolation_summary()["backend"] == "unisolated"
    result = run_python("print('ran')\nimport sys\nsys.exit(0)\nprint('never')")
    assert (result.passed, result.reason, result.stdout) == (False, "incomplete", "ran\n")
    assert run_python("print('ran')").passed


def test_an_unknown_backend_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIERROUTER_SANDBOX", "docker")
    with pytest.raises(SandboxUnavailable, match="HIERROUTER_SANDBOX='docker' is not one of"):
        run_python("print(1)")


def test_expression_values_come_back_as_plain_builtin_data() -> None:
    code = textwrap.dedent(
        """
        import numpy as np
        class Always:
            def __eq__(self, other): return True
        class Seven(int):
            def __eq__(self, other): return True
        def f(x): return [x, (x,), {x}, {"k": 1.5}, b"b", 1j, None, True]
        """
    )
    expressions = ["f(3)", "np.int64(4)", "np.arange(3).reshape(1, 3)", "Always()", "Seven(7)", "1/0"]
    evaluation = evaluate_in_sandbox(code, expressions)
    assert evaluation.error == "" and evaluation.outcomes is not None
    values = [o.value if o.ok else o.error for o in evaluation.outcomes]
    assert values[0] == [3, (3,), {3}, {"k": 1.5}, b"b", 1j, None, True]
    assert [type(v) for v in values[0]] == [int, tuple, set, dict, bytes, complex, type(None), bool]
    assert values[1:3] == [4, [[0, 1, 2]]] and type(values[1]) is int
    assert values[3] == "PlainDataError: a __main__.Always is not plain data"
    assert values[4] == "PlainDataError: a __main__.Seven is not plain data"
    assert values[5].startswith("ZeroDivisionError")


@pytest.mark.parametrize(
    "payload",
    [["int", "3"], ["bool", 1], ["set", [["list", []]]], ["dict", [["x"]]], ["float", 1.5], ["object"], "x"],
)
def test_a_forged_payload_is_not_decoded(payload: object) -> None:
    with pytest.raises(PlainDataError):
        decode_plain(payload)


def test_code_that_exits_early_returns_no_values() -> None:
    evaluation = evaluate_in_sandbox("import os\nos._exit(0)", ["1"])
    assert evaluation.outcomes is None
    assert "incomplete" in evaluation.error
