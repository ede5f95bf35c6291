"""Issue 27's probes: forged verdicts and side doors, each checked from outside the sandbox.

Every probe goes through the project's scoring path (``metrics.score`` on an MBPP item whose only
test is ``assert f() == 3``) and is written so that it scores 1.0 only if its escape worked; the
run mode (``run_python``) then shows, from the probe's own report, that the door was refused.
They run once per isolation backend that works here.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import textwrap
import threading
from pathlib import Path

from tests.training.hostile_support import REPO, assert_contained, backend, score_probe

__all__ = ["backend"]  # the fixture this module's tests use


def _with_libc(body: str) -> str:
    return "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n" + textwrap.dedent(body)


def test_a_forged_completion_marker_and_forged_results_are_not_a_pass(tmp_path: Path, backend: str) -> None:
    # The nonce is found in the bootstrap's frame, the marker printed, a "results" blob written to
    # every descriptor that might be the channel, then the process exits before anything else.
    code = """
        import json, os, sys
        def f(): return 2
        nonce = None
        frame = sys._getframe()
        while frame is not None:
            nonce = frame.f_locals.get("nonce", nonce)
            frame = frame.f_back
        forged = json.dumps([["ok", ["bool", True]], ["ok", ["int", 3]]]).encode()
        for fd in range(3, 20):
            try:
                os.write(fd, forged)
            except OSError:
                pass
        sys.stdout.flush()
        os.write(1, b"\\n[sandbox-complete " + nonce + b"]\\n")
        os._exit(0)
        """
    outcome = score_probe(tmp_path, backend, code)
    assert_contained(outcome)


def test_an_object_that_equals_everything_is_not_a_pass(tmp_path: Path, backend: str) -> None:
    code = """
        class Anything(int):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = int.__hash__
        class Always:
            def __eq__(self, other): return True
        def f(): return Always() if __import__("random").random() < 0.5 else Anything(7)
        """
    for _ in range(2):
        assert_contained(score_probe(tmp_path, backend, code))


def test_the_tests_are_not_in_the_candidates_process(tmp_path: Path, backend: str) -> None:
    # The earlier hack read ``assert f() == 3`` from its own source file; this one also scans the
    # whole of its process memory for it, and returns the expected value only if it found it.
    code = """
        import re
        # Escaped, so that the pattern never matches this probe's own source or memory.
        pattern = re.compile(rb"assert f\\(\\) == (\\d+)")
        found = pattern.search(open(__file__, "rb").read()) is not None
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
            for line in maps:
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                if "r" not in line.split()[1] or end - start > 1 << 28:
                    continue
                try:
                    mem.seek(start)
                    found = found or pattern.search(mem.read(end - start)) is not None
                except (OSError, ValueError, OverflowError):
                    pass
        print("found", found)
        def f(): return 3 if found else 2
        """
    outcome = score_probe(tmp_path, backend, code, timeout_s=20)
    assert_contained(outcome)
    run = score_probe(tmp_path, backend, code, mode="run", timeout_s=20)
    assert "found False" in run.report["stdout"]


def test_system_v_shared_memory_is_refused(tmp_path: Path, backend: str) -> None:
    code = _with_libc("""
        libc.shmget.restype = ctypes.c_int
        libc.shmat.restype = ctypes.c_void_p
        size = 3 << 29  # 1.5 GiB, past the 1 GiB address-space cap once detached
        shmid = libc.shmget(0, ctypes.c_size_t(size), 0o1000 | 0o600)
        print("shmget", shmid, ctypes.get_errno())
        held = False
        if shmid >= 0:
            addr = libc.shmat(shmid, None, 0)
            if addr not in (None, ctypes.c_void_p(-1).value):
                ctypes.memset(addr, 1, size)
                libc.shmdt(ctypes.c_void_p(addr))
                held = True
        def f(): return 3 if held else 2
        """)
    assert_contained(score_probe(tmp_path, backend, code))
    run = score_probe(tmp_path, backend, code, mode="run")
    assert "shmget -1 1" in run.report["stdout"]  # EPERM


def test_a_new_user_namespace_and_its_own_tmpfs_are_refused(tmp_path: Path, backend: str) -> None:
    code = _with_libc("""
        rc = libc.unshare(0x10000000 | 0x00020000)  # CLONE_NEWUSER | CLONE_NEWNS
        print("unshare", rc, ctypes.get_errno())
        wrote = 0
        if rc == 0:
            os.makedirs("/tmp/mine", exist_ok=True)
            if libc.mount(b"none", b"/tmp/mine", b"tmpfs", 0, b"size=1g") == 0:
                with open("/tmp/mine/big", "wb") as fh:
                    for _ in range(512):
                        fh.write(b"x" * (1 << 20))
                        wrote += 1
        rc2 = libc.syscall(435, None, 0)  # clone3: refused before its flags could be read
        print("clone3", rc2, ctypes.get_errno())
        def f(): return 3 if wrote >= 512 else 2
        """)
    assert_contained(score_probe(tmp_path, backend, code))
    run = score_probe(tmp_path, backend, code, mode="run")
    assert "unshare -1 1" in run.report["stdout"]  # EPERM
    assert "clone3 -1 38" in run.report["stdout"]  # ENOSYS: libc falls back to clone, filtered


def test_the_scratch_folder_caps_its_inodes(tmp_path: Path, backend: str) -> None:
    code = """
        import os
        n = 0
        try:
            while n < 400_000:
                open("/tmp/f%d" % n, "w").close()
                n += 1
        except OSError as exc:
            print("files", n, exc.errno)
        def f(): return 3 if n > 5000 else 2
        """
    assert_contained(score_probe(tmp_path, backend, code, timeout_s=20))
    run = score_probe(tmp_path, backend, code, mode="run", timeout_s=20)
    created = int(run.report["stdout"].split()[1])
    assert created <= 4096


def test_a_host_unix_socket_is_unreachable(backend: str, tmp_path: Path) -> None:
    # A listener on a path the sandbox can see (the checkout is bound read-only inside it).
    folder = REPO / f".hostile-socket-{secrets.token_hex(4)}"
    folder.mkdir(mode=0o755)
    path = folder / "s"
    received: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        os.chmod(path, 0o777)
        server.listen(4)
        server.settimeout(0.2)
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    continue
                received.append(conn.recv(100) or b"connected")
                conn.close()

        listener = threading.Thread(target=accept, daemon=True)
        listener.start()
        code = _with_libc(f"""
            import struct
            addr = struct.pack("H", 1) + {str(path).encode()!r}.ljust(108, b"\\0")
            fd = libc.socket(1, 1, 0)
            print("socket", fd, ctypes.get_errno())
            ok = fd >= 0 and libc.connect(fd, addr, len(addr)) == 0 and libc.write(fd, b"probe", 5) == 5
            def f(): return 3 if ok else 2
            """)
        assert_contained(score_probe(tmp_path, backend, code))
        run = score_probe(tmp_path, backend, code, mode="run")
        assert "socket -1 1" in run.report["stdout"]  # EPERM: no socket at all
        stop.set()
        listener.join(timeout=5)
        assert received == [], "the host listener was reached"
    finally:
        server.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_keyrings_memfd_ptrace_and_dev_shm_are_closed(tmp_path: Path, backend: str) -> None:
    # Beyond the probes: a keyring is shared by every process of uid 65534 on the host (a
    # channel between runs), memfd pages escape RLIMIT_AS, ptrace reads other processes, /dev/shm
    # is memory outside the scratch cap.
    code = _with_libc("""
        results = {}
        results["add_key"] = libc.syscall(248, b"user", b"hr-probe", b"x", 1, -4)  # KEY_SPEC_USER_KEYRING
        results["memfd_create"] = libc.memfd_create(b"x", 0)
        results["ptrace"] = libc.ptrace(0, 0, None, None)  # PTRACE_TRACEME
        try:
            open("/dev/shm/x", "wb").write(b"x")
            results["dev_shm"] = 0
        except OSError:
            results["dev_shm"] = -1
        print("results", sorted(results.items()))
        def f(): return 3 if any(v >= 0 for v in results.values()) else 2
        """)
    assert_contained(score_probe(tmp_path, backend, code))
    run = score_probe(tmp_path, backend, code, mode="run")
    assert "('add_key', -1)" in run.report["stdout"]
    assert "('memfd_create', -1)" in run.report["stdout"]
    assert "('ptrace', -1)" in run.report["stdout"]
    assert "('dev_shm', -1)" in run.report["stdout"]
