"""The OS-level isolation under ``runner.py``: which wrapper command to run code in, or refuse.

Why a separate module: the limits in ``bootstrap.py`` (rlimits, a blocked ``socket`` module) only
slow down hostile code; the guarantees come from namespaces and an unprivileged uid, and choosing
and probing those is its own concern. Why bubblewrap: it is a small, widely packaged, well-reviewed
tool that sets up exactly the namespaces and mounts needed, rather than a hand-rolled sequence of
``unshare``/``mount`` calls.

Backends, tried in this order (``HIERROUTER_SANDBOX`` picks one explicitly):

``bwrap``
    ``bwrap`` with its own PID, network, IPC and UTS namespaces, ``--die-with-parent`` and
    ``--new-session``; the host file system bound read-only; ``/root``, ``/home`` and ``/run``
    hidden behind empty tmpfs mounts (secrets, sockets), with the interpreter's own folders bound
    back; a fresh ``/proc`` (only the sandbox's processes) and ``/dev``; ``/tmp`` a tmpfs capped in
    size and (as root) in inodes, the only writable place, that vanishes with the namespace. As
    root, bwrap keeps no user namespace; a one-line ``sh`` step remounts ``/tmp`` with its inode cap
    (the only use of the ``CAP_SYS_ADMIN`` bwrap keeps) and ``setpriv`` then drops to uid/gid 65534
    with no capabilities (bounding set and inheritable set emptied) and ``no_new_privs``; as
    another user, bwrap's user namespace maps uid 65534 onto that unprivileged user, with
    ``--disable-userns``.
``unshare`` (root only, when bwrap is missing)
    ``unshare`` PID/net/IPC/UTS/mount namespaces with ``--kill-child`` (and a parent-death
    signal) and a private ``/proc``; every existing mount remounted read-only (best effort),
    ``/root`` and ``/home`` hidden as above, ``/tmp`` a size-capped tmpfs, ``/var/tmp``, ``/run``
    and ``/dev/shm`` empty; then the same ``setpriv`` drop.
``unisolated``
    Only the in-process limits, no OS isolation: an explicit opt-out for machines where neither
    tool works (``HIERROUTER_SANDBOX=unisolated``). Never chosen automatically.

On every backend the bootstrap then installs the system-call filter of ``seccomp.py`` (no new
namespaces, mounts, sockets, System V IPC, keyrings, ptrace) before the untrusted code runs.

If no backend works the sandbox refuses (``SandboxUnavailable``) with what to install, instead of
running model-written code as root silently. Each backend is probed once per interpreter by
running that interpreter inside it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BACKEND_ENV",
    "SCRATCH_ROOT",
    "Isolation",
    "SandboxUnavailable",
    "isolation_for",
]

BACKEND_ENV = "HIERROUTER_SANDBOX"
BACKENDS = ("bwrap", "unshare", "unisolated")
NOBODY = 65534
# Inside the sandbox the scratch folders live here (a tmpfs for the isolated backends).
SCRATCH_ROOT = "/tmp"
# Folders hidden behind an empty tmpfs: other users' files, root's secrets, service sockets.
_HIDDEN = ("/root", "/home", "/run")
# Folders the unshare backend mounts over (the scratch /tmp included); bwrap hides _HIDDEN + /tmp.
_UNSHARE_COVERED = (*_HIDDEN, SCRATCH_ROOT, "/var/tmp", "/dev/shm")
_INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install -y bubblewrap`; Fedora: `dnf install "
    "bubblewrap`), or run as root where `unshare` and `setpriv` (util-linux) work, or set "
    f"{BACKEND_ENV}=unisolated to run model-written code WITHOUT isolation (docs/security.md)"
)


class SandboxUnavailable(RuntimeError):
    """No isolation could be set up, so untrusted code is not run (the message says what to do)."""


@dataclass(frozen=True)
class Isolation:
    """A working backend: ``command(scratch_bytes)`` is the prefix placed before the interpreter."""

    backend: str
    # (before the scratch mount, after it, after the size/scratch arguments) — see ``command``.
    prefix_parts: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = field(default=((), (), ()))
    network_namespace: bool = False
    pid_namespace: bool = False
    dropped_privileges: bool = False
    read_only_host: bool = False

    def command(self, scratch_bytes: int, scratch_files: int = 4096) -> list[str]:
        """The wrapper argv, with the scratch tmpfs capped at ``scratch_bytes`` and ``scratch_files``
        inodes (the inode cap needs root: the bwrap backend as another user caps the size only)."""
        head, middle, tail = self.prefix_parts
        tail = tuple(str(scratch_files) if part == _FILES_SLOT else part for part in tail)
        if self.backend == "bwrap":
            scratch = ["--perms", "1777", "--size", str(scratch_bytes), "--tmpfs", SCRATCH_ROOT]
            return [*head, *scratch, *middle, "--chdir", SCRATCH_ROOT, *tail]
        if self.backend == "unshare":
            # The caps land in the `sh -c` mount script, passed as its first positional arguments.
            return [*head, str(scratch_bytes), str(scratch_files), *middle, *tail]
        return [*head, *middle, *tail]

    def summary(self) -> dict[str, bool | str]:
        return {
            "backend": self.backend,
            "network_namespace": self.network_namespace,
            "pid_namespace": self.pid_namespace,
            "dropped_privileges": self.dropped_privileges,
            "read_only_host": self.read_only_host,
        }


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _setpriv_drop(setpriv: str) -> list[str]:
    return [
        setpriv,
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


@functools.cache
def _interpreter_prefixes(python: str) -> tuple[str, ...]:
    """``sys.prefix`` and ``sys.base_prefix`` of ``python``, as it reports them outside a sandbox."""
    if python == sys.executable:
        return (sys.prefix, sys.base_prefix)
    try:
        out = subprocess.run(
            [python, "-I", "-c", "import sys; print(sys.prefix); print(sys.base_prefix)"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(p for p in out if p.strip())


def _interpreter_dirs(python: str) -> tuple[str, ...]:
    """Folders the interpreter needs (prefix, base prefix, its bin folder), as given and real."""
    out = _interpreter_prefixes(python)
    dirs = {os.path.dirname(os.path.abspath(python)), os.path.dirname(os.path.realpath(python))}
    dirs.update(os.path.realpath(p) for p in out if p.strip())
    dirs.update(p for p in out if p.strip())
    return tuple(sorted(d for d in dirs if d and os.path.isdir(d)))


def _kept_dirs(python: str, covered: tuple[str, ...]) -> list[str]:
    """The interpreter's folders under a folder that gets mounted over (outermost only), e.g. a
    pyenv in /root or a checkout's venv in /tmp: they are bound back so the interpreter runs."""
    kept: list[str] = []
    for d in sorted(_interpreter_dirs(python), key=len):
        hidden = any(Path(d).is_relative_to(h) for h in covered)
        if hidden and not any(Path(d).is_relative_to(k) for k in kept):
            kept.append(d)
    return kept


def _rebinds(python: str, covered: tuple[str, ...]) -> list[str]:
    """bwrap arguments that bind the kept folders back, read-only, over the hiding tmpfs."""
    args: list[str] = []
    for d in _kept_dirs(python, covered):
        # bwrap would create the folders leading there 0700 (unreadable for uid 65534).
        hidden = next(h for h in covered if Path(d).is_relative_to(h))
        for parent in reversed(Path(d).relative_to(hidden).parents[:-1]):
            args += ["--perms", "0755", "--dir", str(Path(hidden) / parent)]
        args += ["--ro-bind", d, d]
    return args


# Where ``command`` puts the scratch inode cap in a backend's tail.
_FILES_SLOT = "{scratch_files}"
# As root inside bwrap, before the drop: cap the scratch tmpfs's inodes (bwrap has no option for it).
_BWRAP_REMOUNT = 'mount -o remount,nr_inodes="$1" /tmp && shift && exec "$@"'


def _bwrap(python: str) -> Isolation | None:
    bwrap = shutil.which("bwrap")
    setpriv = shutil.which("setpriv")
    if bwrap is None or (_is_root() and setpriv is None):
        return None
    head = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    head += ["--die-with-parent", "--new-session", "--ro-bind", "/", "/"]
    for hidden in _HIDDEN:
        if os.path.isdir(hidden):
            head += ["--tmpfs", hidden]
    head += _rebinds(python, _HIDDEN)
    head += ["--proc", "/proc", "--dev", "/dev"]
    middle = _rebinds(python, (SCRATCH_ROOT,))
    tail: list[str] = []
    if _is_root():
        sh = shutil.which("sh") or "/bin/sh"
        head += ["--cap-add", "CAP_SYS_ADMIN"]
        tail = [sh, "-c", _BWRAP_REMOUNT, "sandbox-setup", _FILES_SLOT, *_setpriv_drop(str(setpriv))]
    else:
        # bwrap's user namespace maps 65534 onto this (already unprivileged) user; caps dropped.
        head += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--cap-drop", "ALL"]
        head += ["--disable-userns"]
    return Isolation("bwrap", (tuple(head), tuple(middle), tuple(tail)), True, True, True, True)


# Runs as root inside the fresh mount namespace, before the drop; it stays PID 1 (the kernel
# ignores SIGXCPU for a namespace's init) and exits with the command's status. $1 is the scratch size, $2 its
# inode cap, $3 the interpreter folders to keep visible under a covered folder (colon-separated),
# then the command.
# Binds are staged under /run (hidden), moved back once the tmpfs mounts cover the rest, and every
# pre-existing mount is remounted read-only (best effort: a mount that refuses stays as it was).
_UNSHARE_MOUNTS = r"""set -ef
size="$1"; files="$2"; keep="$3"; shift 3
mount -t tmpfs -o size=1m,mode=755,nosuid,nodev sandbox-hidden /run
i=0; IFS=:; for d in $keep; do
  mkdir -p "/run/keep/$i"; mount --bind "$d" "/run/keep/$i"; i=$((i+1))
done; unset IFS
cut -d' ' -f5 /proc/self/mountinfo | while read -r m; do
  case "$m" in /proc*|/dev|/dev/*|/run*) ;; *) mount -o remount,bind,ro "$m" 2>/dev/null || true;; esac
done
for d in /root /home; do
  if [ -d "$d" ]; then mount -t tmpfs -o size=1m,mode=755,nosuid,nodev sandbox-hidden "$d"; fi
done
for d in /var/tmp /dev/shm; do
  if [ -d "$d" ]; then mount -t tmpfs -o size=1m,mode=755,nosuid,nodev sandbox-hidden "$d"; fi
done
mount -t tmpfs -o "size=$size,nr_inodes=$files,mode=1777,nosuid,nodev" sandbox-scratch /tmp
i=0; IFS=:; for d in $keep; do
  mkdir -p "$d"; mount --move "/run/keep/$i" "$d"; mount -o remount,bind,ro "$d"; i=$((i+1))
done; unset IFS
cd /tmp
"$@"
"""


def _unshare(python: str) -> Isolation | None:
    unshare, setpriv, sh = shutil.which("unshare"), shutil.which("setpriv"), shutil.which("sh")
    if not (_is_root() and unshare and setpriv and sh and shutil.which("mount")):
        return None
    keep = [d for d in _kept_dirs(python, _UNSHARE_COVERED) if ":" not in d]
    # pdeathsig: unshare itself dies with the scorer, and --kill-child then ends the namespace.
    head = [setpriv, "--pdeathsig", "KILL", "--", unshare, "--pid", "--fork", "--kill-child"]
    head += ["--mount-proc", "--net", "--ipc", "--uts"]
    head += ["--mount", "--propagation", "private", "--", sh, "-c", _UNSHARE_MOUNTS, "sandbox-setup"]
    tail = [":".join(keep), *_setpriv_drop(setpriv)]
    return Isolation("unshare", (tuple(head), (), tuple(tail)), True, True, True, True)


def _works(iso: Isolation, python: str) -> tuple[bool, str]:
    """Run the interpreter inside ``iso``; it must start, find its stdlib and be uid 65534."""
    probe = "import os, sys; print(sys.base_prefix, os.getuid() != 0)"
    cmd = [*iso.command(1 << 20, 64), python, "-I", "-c", probe]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    # The same stdlib as outside: an interpreter that cannot reach its own falls back to another.
    prefixes = _interpreter_prefixes(python)
    expected = prefixes[-1] if prefixes else ""
    out = proc.stdout.strip()
    ok = proc.returncode == 0 and out.endswith(" True") and out.startswith(f"{expected} ")
    return ok, (proc.stderr.strip().splitlines() or [out or f"exit status {proc.returncode}"])[-1]


_LOCK = threading.Lock()


@functools.cache
def _probe(python: str, wanted: str | None) -> Isolation | str:
    if wanted == "unisolated":
        return Isolation("unisolated")
    failures: list[str] = []
    for name, build in (("bwrap", _bwrap), ("unshare", _unshare)):
        if wanted not in (None, name):
            continue
        iso = build(python)
        if iso is None:
            failures.append(f"{name}: not available to this user")
            continue
        ok, why = _works(iso, python)
        if ok:
            return iso
        failures.append(f"{name}: {why}")
    return "; ".join(failures)


def isolation_for(python: str) -> Isolation:
    """The backend to run ``python`` in (probed once), or ``SandboxUnavailable`` saying why not."""
    wanted = os.environ.get(BACKEND_ENV, "").strip().lower() or None
    if wanted is not None and wanted not in BACKENDS:
        raise SandboxUnavailable(f"{BACKEND_ENV}={wanted!r} is not one of {', '.join(BACKENDS)}")
    with _LOCK:
        found = _probe(python, wanted)
    if isinstance(found, Isolation):
        return found
    raise SandboxUnavailable(
        f"refusing to run model-written code: no sandbox could be set up ({found}); {_INSTALL_HINT}"
    )
