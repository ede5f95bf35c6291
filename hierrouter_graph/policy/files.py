"""Reading and writing a saved policy folder (``policy.json`` + ``policy.safetensors``) safely.

Why a module of its own: both policy kinds (``RouterPolicy``, ``DescriptorPolicy``) store the same
two files, and both must (1) refuse a damaged folder with the file's path and what was expected,
and (2) never leave a folder where new weights sit next to an old ``policy.json``. Saving therefore
writes a complete new folder next to the target and swaps it in with ONE rename: an atomic
exchange (``renameat2(RENAME_EXCHANGE)`` on Linux) when the folder exists, a plain rename when it
does not. Anything else the old folder held is carried over (hard links, so open files stay valid).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hierrouter_graph.loading_errors import LoadError, read_json_object, require_fields

__all__ = ["META_FILE", "WEIGHTS_FILE", "load_weights_into", "read_policy_json", "save_policy_folder"]

WEIGHTS_FILE = "policy.safetensors"
META_FILE = "policy.json"
_COMMON_FIELDS: dict[str, type] = {"pool": list, "encoder.name": str, "encoder.dim": int, "horizon": int}
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def read_policy_json(folder: Path) -> dict[str, Any]:
    """``policy.json`` of a saved policy folder, checked for the fields every kind needs."""
    missing = [name for name in (META_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"no policy at {folder}: expected {META_FILE} and {WEIGHTS_FILE}, missing {' and '.join(missing)}"
        )
    meta = read_json_object(folder / META_FILE, "a saved policy's metadata")
    require_fields(folder / META_FILE, meta, _COMMON_FIELDS)
    return meta


def load_weights_into(module: nn.Module, folder: Path) -> None:
    """Load ``policy.safetensors`` into ``module``; a damaged or mismatched file names itself."""
    path = folder / WEIGHTS_FILE
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise LoadError(
            f"{path}: expected the policy weights in safetensors format, got an unreadable file "
            f"({exc}); truncated or not written by save()?"
        ) from exc
    try:
        module.load_state_dict(tensors)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise LoadError(
            f"{path}: the weights do not match {folder / META_FILE} (were the two files saved "
            f"together?): {detail}"
        ) from exc


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _carry_over(old: Path, new: Path) -> None:
    """Give ``new`` everything else ``old`` holds (hard links where possible: cheap, same inodes)."""
    for entry in old.iterdir():
        if entry.name in (META_FILE, WEIGHTS_FILE) or entry.name.endswith(".tmp"):
            continue
        target = new / entry.name
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(target))


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
    return dst


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the platform has no such call."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc != 0:
        errno = ctypes.get_errno()
        if errno in (22, 38, 95):  # EINVAL / ENOSYS / EOPNOTSUPP: file system or kernel lacks it
            return False
        raise OSError(errno, os.strerror(errno), str(b))
    return True


def _swap_in(staging: Path, folder: Path) -> None:
    if not folder.exists():
        with contextlib.suppress(FileExistsError, OSError):
            os.rename(staging, folder)
            return
    if _exchange(staging, folder):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old folder
        return
    # No atomic exchange here: the old folder is moved aside first (a crash in between leaves
    # no folder at all, never a mixed one).
    aside = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    os.rename(folder, aside)
    os.rename(staging, folder)
    shutil.rmtree(aside, ignore_errors=True)


def save_policy_folder(
    directory: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> Path:
    """Write a complete policy folder next to ``directory``, then swap it in with one rename."""
    folder = Path(os.path.realpath(directory))  # through a symlink: swap the folder it points to
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: expected a policy folder (or nothing), got a file")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    try:
        os.chmod(staging, 0o755)
        save_file(dict(tensors), str(staging / WEIGHTS_FILE))
        (staging / META_FILE).write_text(json.dumps(dict(meta), indent=2) + "\n")
        for name in (WEIGHTS_FILE, META_FILE):
            _fsync(staging / name)
        if folder.is_dir():
            _carry_over(folder, staging)
        _swap_in(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Path(directory)
