"""Run untrusted, model-written Python in a throwaway, resource-limited child process.

Why a separate process and not ``exec``: generated code loops forever, allocates without bound,
deletes files and opens sockets; only an OS process can be killed, limited and isolated reliably.

Layers, each a fallback for the ones before it failing or being unavailable:

1. ``unshare --net`` (a fresh network namespace with only a down loopback) when the ``unshare``
   binary works for this process (root or CAP_SYS_ADMIN); detected once and cached.
2. Dropping to uid/gid 65534 (``nobody``) with ``setpriv`` when running as root *and* the
   interpreter still starts normally as that user (on machines where the interpreter lives under
   a private home directory it does not, and the drop is skipped). Without the drop the
   RLIMIT_NPROC limit is not enforced for root.
3. Inside the child, before the user code runs: RLIMIT_AS / CPU / NPROC / NOFILE / FSIZE /
   CORE, and ``socket.socket``, ``socket.create_connection``, ``socket.getaddrinfo`` (and a few
   siblings) replaced by functions that raise ``OSError``.
4. ``python -I`` (isolated mode: no user site, no ``PYTHON*`` variables, no script dir on
   ``sys.path``), a minimal environment, stdin from ``/dev/null``, the working directory a fresh
   temporary directory deleted afterwards, its own session so a timeout kills the whole process
   group, stdout/stderr written to files in that directory (so RLIMIT_FSIZE caps them) and only
   their tails returned.

Every call is independent (its own directory, process and files), so calling ``run_python``
from several threads at once is safe.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SandboxLimits",
    "SandboxResult",
    "isolation_summary",
    "run_python",
]

_NOBODY = 65534

# Runs inside the child with the limits passed as argv; it must only use the standard library.
_BOOTSTRAP = r"""
import resource, signal, socket, sys

def _limit(which, value, hard_extra=0):
    if value < 0:
        return
    try:
        resource.setrlimit(which, (value, value + hard_extra))
    except (ValueError, OSError):
        pass

mem, cpu, nproc, nofile, fsize = (int(v) for v in sys.argv[2:7])
_limit(resource.RLIMIT_AS, mem)
# SIGXCPU at the soft limit reads as "timeout"; SIGKILL follows a second later.
_limit(resource.RLIMIT_CPU, cpu, 1)
_limit(resource.RLIMIT_NPROC, nproc)
_limit(resource.RLIMIT_NOFILE, nofile)
_limit(resource.RLIMIT_FSIZE, fsize)
_limit(resource.RLIMIT_CORE, 0)
# A write past RLIMIT_FSIZE then raises OSError(EFBIG) instead of killing the process silently.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in the sandbox")

class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        _no_network()

socket.socket = _NoSocket
socket.SocketType = _NoSocket
for _name in ("create_connection", "create_server", "getaddrinfo", "gethostbyname",
              "gethostbyname_ex", "gethostbyaddr", "socketpair", "fromfd"):
    setattr(socket, _name, _no_network)
try:
    import _socket
    _socket.socket = _NoSocket
    _socket.SocketType = _NoSocket
    _socket.getaddrinfo = _no_network
except ImportError:
    pass
del _name

_path = sys.argv[1]
with open(_path, encoding="utf-8") as _fh:
    _source = _fh.read()
sys.argv = [_path]
_globals = {"__name__": "__main__", "__file__": _path, "__builtins__": __builtins__}
exec(compile(_source, _path, "exec"), _globals)
"""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource caps for one run. ``cpu_seconds=None`` means ``int(timeout_s) + 2``.

    ``max_processes`` counts all processes/threads of the sandbox user, so 0 forbids any
    ``fork``/thread creation; the kernel ignores it for root (see module docstring).
    """

    timeout_s: float = 5.0
    memory_bytes: int = 1 << 30
    cpu_seconds: int | None = None
    max_processes: int = 0
    max_open_files: int = 64
    max_file_bytes: int = 16 << 20
    max_output_chars: int = 4000


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run.

    ``reason`` is one of ``"ok"`` (exit status 0), ``"error"`` (non-zero exit, e.g. a failed
    assert or a syntax error), ``"timeout"`` (wall clock or CPU limit), ``"memory"``
    (``MemoryError``/allocation failure under RLIMIT_AS) or ``"killed"`` (another signal).
    """

    passed: bool
    reason: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float


@dataclass(frozen=True)
class _Isolation:
    prefix: tuple[str, ...]
    network_namespace: bool
    dropped_privileges: bool


def _works(cmd: list[str], expect: str | None = None) -> bool:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and (expect is None or proc.stdout.strip() == expect)


_PROBE_LOCK = threading.Lock()


def _isolation(python: str) -> _Isolation:
    """Find once which OS-level isolation this process can use with this interpreter."""
    with _PROBE_LOCK:
        return _probe_isolation(python)


@functools.cache
def _probe_isolation(python: str) -> _Isolation:
    prefix: list[str] = []
    unshare = shutil.which("unshare")
    netns = unshare is not None and _works([unshare, "--net", python, "-I", "-c", "pass"])
    if unshare is not None and netns:
        prefix = [unshare, "--net"]
    dropped = False
    setpriv = shutil.which("setpriv")
    if setpriv and hasattr(os, "geteuid") and os.geteuid() == 0:
        drop = [setpriv, f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups"]
        probe = "import sys; print(sys.base_prefix)"
        # The interpreter must find its own standard library as that user, not another one.
        if _works([*prefix, *drop, python, "-I", "-c", probe], expect=sys.base_prefix):
            prefix += drop
            dropped = True
    return _Isolation(tuple(prefix), netns, dropped)


def isolation_summary(python: str | None = None) -> dict[str, bool]:
    """Which optional OS layers are active, for logs and for tests that depend on them."""
    iso = _isolation(python or sys.executable)
    return {
        "network_namespace": iso.network_namespace,
        "dropped_privileges": iso.dropped_privileges,
    }


def _tail(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4 * limit))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return text[-limit:]


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _classify(returncode: int, stderr: str, timed_out: bool) -> str:
    if timed_out:
        return "timeout"
    if returncode == 0:
        return "ok"
    if returncode == -signal.SIGXCPU:  # RLIMIT_CPU's soft limit
        return "timeout"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory"
    return "killed" if returncode < 0 else "error"


def run_python(
    code: str,
    *,
    limits: SandboxLimits | None = None,
    timeout_s: float | None = None,
    python: str | None = None,
) -> SandboxResult:
    """Execute ``code`` as ``__main__`` in the sandbox; ``passed`` means it exited with status 0.

    ``timeout_s`` overrides ``limits.timeout_s``. ``python`` defaults to this interpreter.
    """
    limits = limits or SandboxLimits()
    timeout = limits.timeout_s if timeout_s is None else timeout_s
    cpu = limits.cpu_seconds if limits.cpu_seconds is not None else int(timeout) + 2
    python = python or sys.executable
    iso = _isolation(python)
    workdir = Path(tempfile.mkdtemp(prefix="hierrouter-sandbox-"))
    start = time.monotonic()
    try:
        if iso.dropped_privileges:
            os.chown(workdir, _NOBODY, _NOBODY)
        script = workdir / "solution.py"
        script.write_text(code, encoding="utf-8")
        script.chmod(0o644)
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        cmd = [
            *iso.prefix,
            python,
            "-I",
            "-c",
            _BOOTSTRAP,
            str(script),
            str(limits.memory_bytes),
            str(cpu),
            str(limits.max_processes),
            str(limits.max_open_files),
            str(limits.max_file_bytes),
        ]
        out_path, err_path = workdir / ".stdout", workdir / ".stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                cmd,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            # Kill the whole group either way: the code may have left children behind.
            _kill_group(proc.pid)
            proc.wait()
        duration = time.monotonic() - start
        stdout = _tail(out_path, limits.max_output_chars)
        stderr = _tail(err_path, limits.max_output_chars)
        reason = _classify(proc.returncode, stderr, timed_out)
        return SandboxResult(
            passed=reason == "ok",
            reason=reason,
            returncode=None if timed_out else proc.returncode,
            stdout=stdout,
            stderr=stderr,
            duration_s=duration,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
