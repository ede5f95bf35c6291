"""Run untrusted, model-written Python in a throwaway, isolated, resource-limited child process.

Why a separate process and not ``exec``: generated code loops forever, allocates without bound,
deletes files, opens sockets, kills other processes; only an OS process can be killed, limited
and isolated reliably.

Layers (docs/security.md says what they guarantee and what they do not):

1. OS isolation from ``training.sandbox_isolation`` (bubblewrap, else ``unshare`` + ``setpriv``):
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
from dataclasses import dataclass
from typing import IO

from training.sandbox_isolation import SCRATCH_ROOT, SandboxUnavailable, isolation_for

__all__ = [
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "isolation_summary",
    "run_python",
]

# Runs inside the child with the limits passed as argv; stdin carries "<nonce>\n<code>".
# It must only use the standard library.
_BOOTSTRAP = r"""
import os, resource, signal, socket, sys

def _limit(which, value, hard_extra=0):
    if value < 0:
        return
    try:
        resource.setrlimit(which, (value, value + hard_extra))
    except (ValueError, OSError):
        pass

def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in the sandbox")

class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        _no_network()

def _main():
    workdir = sys.argv[1]
    mem, cpu, nproc, nofile, fsize = (int(v) for v in sys.argv[2:7])
    nonce, _, source = sys.stdin.buffer.read().partition(b"\n")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    os.chdir(workdir)
    path = os.path.join(workdir, "solution.py")
    with open(path, "wb") as fh:
        fh.write(source)
    _limit(resource.RLIMIT_AS, mem)
    # SIGXCPU at the soft limit reads as "timeout"; SIGKILL follows a second later.
    _limit(resource.RLIMIT_CPU, cpu, 1)
    _limit(resource.RLIMIT_NPROC, nproc)
    _limit(resource.RLIMIT_NOFILE, nofile)
    _limit(resource.RLIMIT_FSIZE, fsize)
    _limit(resource.RLIMIT_CORE, 0)
    # A write past RLIMIT_FSIZE then raises OSError(EFBIG) instead of killing the process silently.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    socket.socket = _NoSocket
    socket.SocketType = _NoSocket
    for name in ("create_connection", "create_server", "getaddrinfo", "gethostbyname",
                 "gethostbyname_ex", "gethostbyaddr", "socketpair", "fromfd"):
        setattr(socket, name, _no_network)
    try:
        import _socket
        _socket.socket = _NoSocket
        _socket.SocketType = _NoSocket
        _socket.getaddrinfo = _no_network
    except ImportError:
        pass
    sys.argv = [path]
    code = compile(source.decode("utf-8"), path, "exec")
    exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__})
    # Reached only when every statement ran: the completion marker the parent requires.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os.write(1, b"\n[sandbox-complete " + nonce + b"]\n")

_main()
"""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource caps for one run. ``cpu_seconds=None`` means ``int(timeout_s) + 2``.

    ``max_processes`` counts all processes/threads of the sandbox user, so 0 forbids any
    ``fork``/thread creation. ``max_file_bytes`` caps each written file and each of stdout and
    stderr; ``max_scratch_bytes`` caps the whole scratch tmpfs (memory-backed, hence the cap).
    """

    timeout_s: float = 5.0
    memory_bytes: int = 1 << 30
    cpu_seconds: int | None = None
    max_processes: int = 0
    max_open_files: int = 64
    max_file_bytes: int = 16 << 20
    max_output_chars: int = 4000
    max_scratch_bytes: int = 64 << 20


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
    cpu = limits.cpu_seconds if limits.cpu_seconds is not None else int(timeout) + 2
    python = python or sys.executable
    iso = isolation_for(python)
    name = f"hierrouter-sandbox-{secrets.token_hex(8)}"
    host_dir: str | None = None
    if iso.backend == "unisolated":
        host_dir = tempfile.mkdtemp(prefix="hierrouter-sandbox-")
        workdir = host_dir
    else:
        workdir = f"{SCRATCH_ROOT}/{name}"
    nonce = secrets.token_hex(16).encode()
    marker = b"\n[sandbox-complete " + nonce + b"]\n"
    args = [str(limits.memory_bytes), str(cpu), str(limits.max_processes)]
    args += [str(limits.max_open_files), str(limits.max_file_bytes)]
    cmd = [*iso.command(limits.max_scratch_bytes), python, "-I", "-c", _BOOTSTRAP, workdir, *args]
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
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            feeder = threading.Thread(
                target=_feed_stdin, args=(proc.stdin, nonce + b"\n" + code.encode()), daemon=True
            )
            feeder.start()
            captures = {
                proc.stdout: _Capture(keep, limits.max_file_bytes, marker),
                proc.stderr: _Capture(keep, limits.max_file_bytes, marker),
            }
            timed_out = _pump(proc, captures, start + timeout)
            if not timed_out:
                try:
                    proc.wait(timeout=max(0.0, start + timeout - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            _kill(proc)
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        returncode = proc.returncode
        if iso.backend != "unisolated" and returncode > 128:
            returncode = -(returncode - 128)  # the wrappers report a signalled child as 128 + signal
        out, err = captures[proc.stdout], captures[proc.stderr]
        stderr = err.text(limits.max_output_chars)
        reason = _classify(returncode, stderr, timed_out, out.marker_seen)
        return SandboxResult(
            passed=reason == "ok",
            reason=reason,
            returncode=None if timed_out else returncode,
            stdout=out.text(limits.max_output_chars),
            stderr=stderr,
            duration_s=time.monotonic() - start,
        )
    finally:
        if host_dir is not None:
            shutil.rmtree(host_dir, ignore_errors=True)
