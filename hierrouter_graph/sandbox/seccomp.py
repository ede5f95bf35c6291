"""The system-call filter every sandboxed program runs under, compiled once with libseccomp.

Why a filter on top of namespaces and uid 65534: namespaces leave doors that an unprivileged
process can still open (probes in issue 27): creating its own user namespace and mounting a tmpfs
past the scratch cap, System V shared memory that RLIMIT_AS does not count, unix sockets of host
services reachable by path through the read-only bind. The filter closes those doors by name,
with ``EPERM`` (``ENOSYS`` for ``clone3``, whose flags a filter cannot read, so that libc falls
back to ``clone``, whose flags it can):

- no new namespaces: ``unshare``, ``setns``, ``clone``/``clone3`` with a ``CLONE_NEW*`` flag;
- no mounts: ``mount``, ``umount2``, ``pivot_root``, ``chroot`` and the new mount API;
- no sockets at all: ``socket``, ``socketpair`` (model-written code needs none; this covers
  host unix sockets wherever they are bound);
- no System V IPC (``shm*``, ``msg*``, ``sem*``), no anonymous memory files (``memfd_create``),
  no kernel keyrings (shared by every process of uid 65534 on the host);
- no debugging or kernel interfaces: ``ptrace``, ``process_vm_*``, ``bpf``, ``perf_event_open``,
  ``userfaultfd``, ``io_uring_*``, modules, ``kexec``, ``reboot``, ``swapon``/``swapoff``, ``acct``.

The filter is compiled here (the trusted side) by libseccomp through ``pyseccomp`` and handed to
the sandbox as raw BPF; the sandbox's bootstrap installs it with ``prctl`` just before the
untrusted code runs (``no_new_privs`` is already set), so it cannot be lifted afterwards.
"""

from __future__ import annotations

import functools
import tempfile

__all__ = ["BLOCKED_SYSCALLS", "CLONE_NEW_FLAGS", "SeccompUnavailable", "filter_bpf"]

EPERM = 1
ENOSYS = 38
# Every CLONE_NEW* flag: CLONE_NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
CLONE_NEW_FLAGS = (0x80, 0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000)

BLOCKED_SYSCALLS: tuple[str, ...] = (
    # namespaces and mounts
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # sockets
    "socket", "socketpair",
    # memory the address-space limit does not count, and cross-process state
    "shmget", "shmat", "shmctl", "shmdt", "msgget", "msgsnd", "msgrcv", "msgctl",
    "semget", "semop", "semtimedop", "semctl", "memfd_create", "memfd_secret",
    "keyctl", "add_key", "request_key",
    # debugging and kernel interfaces
    "ptrace", "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open",
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "lookup_dcookie",
)  # fmt: skip


class SeccompUnavailable(RuntimeError):
    """libseccomp (or its ``pyseccomp`` binding) is missing, so no filter can be compiled."""


@functools.cache
def filter_bpf() -> bytes:
    """The compiled filter for this machine's architecture (raw ``struct sock_filter`` array)."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError, RuntimeError) as exc:  # the binding loads libseccomp.so.2
        raise SeccompUnavailable(
            f"cannot compile the sandbox's system-call filter ({exc}): install libseccomp2 "
            "(Debian/Ubuntu: `apt-get install -y libseccomp2`) and `pip install pyseccomp`"
        ) from None
    flt = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in BLOCKED_SYSCALLS:
        try:
            flt.add_rule(seccomp.ERRNO(EPERM), name)
        except Exception:
            continue
    flt.add_rule(seccomp.ERRNO(ENOSYS), "clone3")
    for flag in CLONE_NEW_FLAGS:  # rules are OR-ed: any one namespace flag refuses the clone
        flt.add_rule(seccomp.ERRNO(EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    with tempfile.TemporaryFile() as fh:
        flt.export_bpf(fh)
        fh.seek(0)
        return fh.read()
