"""The program the sandboxed interpreter runs first: limits, filter, then the untrusted code.

Why a bootstrap and not the code itself: the limits and the system-call filter must be in place
before the first untrusted statement, and the values a verdict needs must leave through a channel
of their own as plain data (``plain.py``), never as objects and never mixed into stdout.

Protocol: ``python -I -c SOURCE WORKDIR MEM CPU NPROC NOFILE FSIZE RESULT_FD``; stdin carries one
JSON header line (``nonce``; ``seccomp``: the BPF filter as hex, or ``""``; ``expressions``: Python
expressions to evaluate after the code; ``inputs``: a plain-data value bound to ``__v`` before the
code runs, or ``null``) and then the code. After the whole code ran, each expression is evaluated
in the code's namespace and ``[["ok", encoded] | ["error", "Type: message"], ...]`` is written to
RESULT_FD (``-1``: none asked); last, ``[sandbox-complete NONCE]`` is printed. A filter that cannot
be installed ends the run with status ``FILTER_FAILED`` before any untrusted code runs.
"""

from __future__ import annotations

import inspect

from hierrouter_graph.sandbox import plain

__all__ = ["BOOTSTRAP", "FILTER_FAILED", "FILTER_FAILED_MESSAGE"]

FILTER_FAILED = 97
FILTER_FAILED_MESSAGE = "sandbox: the system-call filter could not be installed"

# Runs inside the child after the plain-data codec's source; standard library only.
_MAIN = r"""
import json as _json
import os as _os
import resource as _resource
import signal as _signal
import socket as _socket
import sys as _sys


def _limit(which, value, hard_extra=0):
    if value < 0:
        return
    try:
        _resource.setrlimit(which, (value, value + hard_extra))
    except (ValueError, OSError):
        pass


def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in the sandbox")


class _NoSocket(_socket.socket):
    def __init__(self, *args, **kwargs):
        _no_network()


def _install_filter(bpf):
    import ctypes

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _Prog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    # PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with SECCOMP_MODE_FILTER
    ok = libc.prctl(38, 1, 0, 0, 0) == 0 and libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0
    if not ok:
        _os.write(2, ("%s (errno %d)\n" % (FILTER_FAILED_MESSAGE, ctypes.get_errno())).encode())
        _os._exit(FILTER_FAILED)


def _write_all(fd, data):
    while data:
        data = data[_os.write(fd, data):]


def _results(expressions, namespace):
    out = []
    for text in expressions:
        try:
            value = eval(compile(text, "<test input>", "eval"), namespace)
            out.append(["ok", encode_plain(value)])
        except BaseException as exc:  # noqa: BLE001 - every failure is that expression's result
            out.append(["error", ("%s: %s" % (type(exc).__name__, exc))[:300]])
    return out


def _main():
    workdir = _sys.argv[1]
    mem, cpu, nproc, nofile, fsize, result_fd = (int(v) for v in _sys.argv[2:8])
    header, _, source = _sys.stdin.buffer.read().partition(b"\n")
    header = _json.loads(header)
    devnull = _os.open(_os.devnull, _os.O_RDONLY)
    _os.dup2(devnull, 0)
    _os.close(devnull)
    _os.makedirs(workdir, mode=0o700, exist_ok=True)
    _os.chdir(workdir)
    path = _os.path.join(workdir, "solution.py")
    with open(path, "wb") as fh:
        fh.write(source)
    namespace = {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__}
    if header["inputs"] is not None:
        namespace["__v"] = decode_plain(header["inputs"])
    code = compile(source.decode("utf-8"), path, "exec")
    if header["seccomp"]:
        _install_filter(bytes.fromhex(header["seccomp"]))
    _limit(_resource.RLIMIT_AS, mem)
    # SIGXCPU at the soft limit reads as "timeout"; SIGKILL follows a second later.
    _limit(_resource.RLIMIT_CPU, cpu, 1)
    _limit(_resource.RLIMIT_NPROC, nproc)
    _limit(_resource.RLIMIT_NOFILE, nofile)
    _limit(_resource.RLIMIT_FSIZE, fsize)
    _limit(_resource.RLIMIT_CORE, 0)
    # A write past RLIMIT_FSIZE then raises OSError(EFBIG) instead of killing the process silently.
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)
    _socket.socket = _NoSocket
    _socket.SocketType = _NoSocket
    for name in ("create_connection", "create_server", "getaddrinfo", "gethostbyname",
                 "gethostbyname_ex", "gethostbyaddr", "socketpair", "fromfd"):
        setattr(_socket, name, _no_network)
    try:
        import _socket as _raw_socket
        _raw_socket.socket = _NoSocket
        _raw_socket.SocketType = _NoSocket
        _raw_socket.getaddrinfo = _no_network
    except ImportError:
        pass
    _sys.argv = [path]
    nonce = header["nonce"].encode()
    expressions = header["expressions"]
    del header, source
    exec(code, namespace)
    # Reached only when every statement ran.
    if result_fd >= 0:
        _write_all(result_fd, _json.dumps(_results(expressions, namespace)).encode())
        _os.close(result_fd)
    for stream in (_sys.stdout, _sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    _os.write(1, b"\n[sandbox-complete " + nonce + b"]\n")


_main()
"""

BOOTSTRAP = (
    inspect.getsource(plain)
    + f"\nFILTER_FAILED = {FILTER_FAILED}\nFILTER_FAILED_MESSAGE = {FILTER_FAILED_MESSAGE!r}\n"
    + _MAIN
)
