"""Run untrusted, model-written Python in a throwaway, isolated, resource-limited child process.

Why a separate process and not ``exec``: generated code loops forever, allocates without bound,
deletes files, opens sockets, kills other processes; only an OS process can be killed, limited
and isolated reliably.

Layers (docs/security.md says what they guarantee and what they do not):

1. OS isolation from ``isolation.py`` (bubblewrap, else ``unshare`` + ``setpriv``):
   uid 65534 with no capabilities, own PID and network namespaces, read-only host, scratch on a
   size-capped tmpfs that disappears with the namespace, every descendant killed when the run
   ends or the scorer dies. Without a working backend ``run_python`` raises
   ``SandboxUnavailable`` (the opt-out ``HIERROUTER_SANDBOX=unisolated`` keeps only the layers
   below).
2. Inside the child, before the user code runs: RLIMIT_AS / CPU / NPROC / NOFILE / FSIZE /
   CORE, and ``socket.socket``, ``socket.create_connection``, ``socket.getaddrinfo`` (and a few
   siblings) replaced by functions that raise ``OSError``.
3. ``python -I`` (isolated mode), a minimal environment, the code passed on stdin (then stdin is
   ``/dev/null``), stdout/stderr read through pipes with a size cap (past it the pipe is closed,
   so further writes fail) and only their tails returned.
4. A pass needs more than exit status 0: after the whole program ran (the asserts come last) the
   bootstrap prints a per-run random marker, which the parent checks and strips; ``sys.exit(0)``,
   ``os._exit(0)`` or ``unittest.main()`` before the end give reason ``"incomplete"``.

Every call is independent (its own namespaces, folder and pipes), so calling ``run_python`` from
several threads at once is safe.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from hierrouter_graph.sandbox.bootstrap import BOOTSTRAP, FILTER_FAILED, FILTER_FAILED_MESSAGE
from hierrouter_graph.sandbox.isolation import SCRATCH_ROOT, SandboxUnavailable, isolation_for
from hierrouter_graph.sandbox.plain import PlainDataError, decode_plain, encode_plain
from hierrouter_graph.sandbox.seccomp import SeccompUnavailable, filter_bpf

__all__ = [
    "Evaluation",
    "ExpressionOutcome",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "evaluate_in_sandbox",
    "isolation_summary",
    "run_python",
]

# The results channel carries plain data only; more than this is an error, not a verdict.
MAX_RESULT_BYTES = 4 << 20


@dataclass(frozen=True)
class SandboxLimits:
    """Resource caps for one run. ``cpu_seconds=None`` means ``int(timeout_s) + 2``.

    ``max_processes`` counts all processes/threads of the sandbox user, so 0 forbids any
    ``fork``/thread creation. ``max_file_bytes`` caps each written file and each of stdout and
    stderr; ``max_scratch_bytes`` and ``max_scratch_files`` cap the whole scratch tmpfs (memory-backed,
    hence the caps: its size and its inodes, which cost kernel memory too).
    """

    timeout_s: float = 5.0
    memory_bytes: int = 1 << 30
    cpu_seconds: int | None = None
    max_processes: int = 0
    max_open_files: int = 64
    max_file_bytes: int = 16 << 20
    max_output_chars: int = 4000
    max_scratch_bytes: int = 64 << 20
    max_scratch_files: int = 4096


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run.

    ``reason`` is one of ``"ok"`` (the whole program ran and exited with status 0), ``"error"``
    (non-zero exit, e.g. a failed assert or a syntax error), ``"incomplete"`` (exit status 0
    before the end of the code: ``sys.exit``, ``os._exit``, ``unittest.main()``), ``"timeout"``
    (wall clock or CPU limit), ``"memory"`` (``MemoryError``/allocation failure under RLIMIT_AS)
    or ``"killed"`` (another signal).
    """

    passed: bool
    reason: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float


def isolation_summary(python: str | None = None) -> dict[str, bool | str]:
    """Which OS layers are active (``backend`` is ``"none"`` when the sandbox would refuse)."""
    try:
        return isolation_for(python or sys.executable).summary()
    except SandboxUnavailable:
        return {
            "backend": "none",
            "network_namespace": False,
            "pid_namespace": False,
            "dropped_privileges": False,
            "read_only_host": False,
        }


class _Capture:
    """A bounded tail of one pipe, the total size, and whether the marker went through it."""

    def __init__(self, keep: int, cap: int, marker: bytes) -> None:
        self.keep, self.cap, self.marker = keep, cap, marker
        self.tail = bytearray()
        self.total = 0
        self.marker_seen = False

    def feed(self, chunk: bytes) -> bool:
        """Record ``chunk``; False once the cap is reached (the caller then closes the pipe)."""
        window = bytes(self.tail[-len(self.marker) :]) + chunk
        self.marker_seen = self.marker_seen or self.marker in window
        self.total += len(chunk)
        self.tail += chunk
        del self.tail[: max(0, len(self.tail) - self.keep)]
        return self.total <= self.cap

    def text(self, limit: int) -> str:
        data = bytes(self.tail)
        if self.marker_seen:
            data = data.replace(self.marker, b"", 1)
        return data.decode("utf-8", errors="replace")[-limit:]


def _pump(proc: subprocess.Popen[bytes], captures: dict[IO[bytes], _Capture], deadline: float) -> bool:
    """Read both pipes until EOF or the deadline; True when the deadline passed."""
    sel = selectors.DefaultSelector()
    for pipe in captures:
        sel.register(pipe, selectors.EVENT_READ, data=pipe)
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            exited = proc.poll() is not None
            for key, _ in sel.select(0 if exited else min(remaining, 0.2)):
                stream: IO[bytes] = key.data
                chunk = os.read(stream.fileno(), 1 << 16)
                if not chunk or not captures[stream].feed(chunk):
                    sel.unregister(stream)
                    stream.close()
            if exited and not sel.select(0):
                return False
        return False
    finally:
        sel.close()


def _feed_stdin(pipe: IO[bytes], payload: bytes) -> None:
    with contextlib.suppress(OSError):
        pipe.write(payload)
    with contextlib.suppress(OSError):
        pipe.close()


def _classify(returncode: int, stderr: str, timed_out: bool, completed: bool) -> str:
    if timed_out:
        return "timeout"
    if returncode == 0:
        return "ok" if completed else "incomplete"
    if returncode == -signal.SIGXCPU:  # RLIMIT_CPU's soft limit
        return "timeout"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory"
    return "killed" if returncode < 0 else "error"


def _child_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _kill(proc: subprocess.Popen[bytes]) -> None:
    # Killing bwrap/unshare tears down the PID namespace; the group covers the unisolated mode.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


@dataclass(frozen=True)
class ExpressionOutcome:
    """One expression evaluated after the code: its plain value, or the error it raised."""

    ok: bool
    value: Any = None
    error: str = ""


@dataclass(frozen=True)
class Evaluation:
    """A run plus the plain values of the expressions asked for.

    ``outcomes`` is ``None`` when the code did not run to its end (the run's ``reason`` says why)
    or sent back something that is not a valid plain-data answer (``error`` says what).
    """

    run: SandboxResult
    outcomes: tuple[ExpressionOutcome, ...] | None
    error: str = ""


def _header(nonce: str, expressions: Sequence[str], inputs: Any) -> bytes:
    try:
        bpf = filter_bpf()
    except SeccompUnavailable as exc:
        raise SandboxUnavailable(f"refusing to run model-written code: {exc}") from None
    header = {
        "nonce": nonce,
        "seccomp": bpf.hex(),
        "expressions": list(expressions),
        "inputs": None if inputs is None else encode_plain(inputs),
    }
    return json.dumps(header).encode() + b"\n"


def _run(
    code: str,
    expressions: Sequence[str] | None,
    inputs: Any,
    limits: SandboxLimits,
    timeout: float,
    python: str,
) -> tuple[SandboxResult, bytes | None]:
    cpu = limits.cpu_seconds if limits.cpu_seconds is not None else int(timeout) + 2
    iso = isolation_for(python)
    name = f"hierrouter-sandbox-{secrets.token_hex(8)}"
    host_dir: str | None = None
    if iso.backend == "unisolated":
        host_dir = tempfile.mkdtemp(prefix="hierrouter-sandbox-")
        workdir = host_dir
    else:
        workdir = f"{SCRATCH_ROOT}/{name}"
    nonce = secrets.token_hex(16)
    marker = b"\n[sandbox-complete " + nonce.encode() + b"]\n"
    payload = _header(nonce, expressions or [], inputs) + code.encode("utf-8", errors="surrogatepass")
    result_r, result_w = os.pipe() if expressions is not None else (-1, -1)
    args = [str(limits.memory_bytes), str(cpu), str(limits.max_processes)]
    args += [str(limits.max_open_files), str(limits.max_file_bytes), str(result_w)]
    scratch = iso.command(limits.max_scratch_bytes, limits.max_scratch_files)
    cmd = [*scratch, python, "-I", "-c", BOOTSTRAP, workdir, *args]
    keep = 4 * limits.max_output_chars + len(marker)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=host_dir or "/",
            env=_child_env(workdir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            pass_fds=(result_w,) if result_w >= 0 else (),
        )
        if result_w >= 0:
            os.close(result_w)
            result_w = -1
        results_pipe = os.fdopen(result_r, "rb") if result_r >= 0 else None
        result_r = -1
        try:
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            feeder = threading.Thread(target=_feed_stdin, args=(proc.stdin, payload), daemon=True)
            feeder.start()
            captures = {
                proc.stdout: _Capture(keep, limits.max_file_bytes, marker),
                proc.stderr: _Capture(keep, limits.max_file_bytes, marker),
            }
            if results_pipe is not None:
                captures[results_pipe] = _Capture(MAX_RESULT_BYTES, MAX_RESULT_BYTES, b"")
            timed_out = _pump(proc, captures, start + timeout)
            if not timed_out:
                try:
                    proc.wait(timeout=max(0.0, start + timeout - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            _kill(proc)
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr, results_pipe):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        returncode = proc.returncode
        if iso.backend != "unisolated" and returncode > 128:
            returncode = -(returncode - 128)  # the wrappers report a signalled child as 128 + signal
        out, err = captures[proc.stdout], captures[proc.stderr]
        stderr = err.text(limits.max_output_chars)
        if returncode == FILTER_FAILED and FILTER_FAILED_MESSAGE in stderr:
            raise SandboxUnavailable(f"refusing to run model-written code: {stderr.strip()}")
        reason = _classify(returncode, stderr, timed_out, out.marker_seen)
        result = SandboxResult(
            passed=reason == "ok",
            reason=reason,
            returncode=None if timed_out else returncode,
            stdout=out.text(limits.max_output_chars),
            stderr=stderr,
            duration_s=time.monotonic() - start,
        )
        answer = None
        if results_pipe is not None:
            capture = captures[results_pipe]
            answer = bytes(capture.tail) if capture.total <= MAX_RESULT_BYTES else b""
        return result, answer
    finally:
        for fd in (result_r, result_w):
            if fd >= 0:
                os.close(fd)
        if host_dir is not None:
            shutil.rmtree(host_dir, ignore_errors=True)


def run_python(
    code: str,
    *,
    limits: SandboxLimits | None = None,
    timeout_s: float | None = None,
    python: str | None = None,
) -> SandboxResult:
    """Execute ``code`` as ``__main__`` in the sandbox; ``passed`` means it ran to its end, status 0.

    ``timeout_s`` overrides ``limits.timeout_s``. ``python`` defaults to this interpreter.
    Raises ``SandboxUnavailable`` when no isolation can be set up (see module docstring).
    """
    limits = limits or SandboxLimits()
    timeout = limits.timeout_s if timeout_s is None else timeout_s
    return _run(code, None, None, limits, timeout, python or sys.executable)[0]


def _outcomes(answer: bytes | None, count: int) -> tuple[tuple[ExpressionOutcome, ...] | None, str]:
    if not answer:
        return None, "no results came back"
    try:
        rows = json.loads(answer)
        if not isinstance(rows, list) or len(rows) != count:
            raise PlainDataError(f"expected a list of {count} results")
        outcomes = []
        for row in rows:
            if not isinstance(row, list) or len(row) != 2 or row[0] not in ("ok", "error"):
                raise PlainDataError('expected ["ok", value] or ["error", message] rows')
            if row[0] == "ok":
                outcomes.append(ExpressionOutcome(True, decode_plain(row[1])))
            else:
                outcomes.append(ExpressionOutcome(False, error=str(row[1])))
    except (ValueError, RecursionError) as exc:  # JSON errors and PlainDataError are ValueErrors
        return None, f"invalid results: {str(exc)[:200]}"
    return tuple(outcomes), ""


def evaluate_in_sandbox(
    code: str,
    expressions: Sequence[str],
    *,
    inputs: Any = None,
    limits: SandboxLimits | None = None,
    python: str | None = None,
) -> Evaluation:
    """Run ``code``, then evaluate each of ``expressions`` in its namespace; values come back plain.

    Why: a verdict must not be computed where untrusted code runs. The caller sends only the
    inputs of its tests (``f(3, 4)``), gets back plain data (``plain.py``: exact builtin types,
    no behaviour) and compares with the expected values itself, which the code never sees.
    ``inputs`` (plain data) is bound to ``__v`` before ``code`` runs (for trusted checks of
    returned values). Raises ``SandboxUnavailable`` like :func:`run_python`.
    """
    limits = limits or SandboxLimits()
    result, answer = _run(code, expressions, inputs, limits, limits.timeout_s, python or sys.executable)
    if not result.passed:
        return Evaluation(result, None, f"the code did not run to its end ({result.reason})")
    outcomes, error = _outcomes(answer, len(expressions))
    return Evaluation(result, outcomes, error)
