"""Broken policy folders and configs fail with the file's name and what was expected; saving a
policy replaces the folder as a whole; CLIs turn input errors into one line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import hierrouter_graph.__main__ as cli_main
import hierrouter_graph.policy.files as policy_files
from hierrouter_graph import ModelSpec, RouterConfig, RouterPolicy
from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.defaults import DEFAULT_POLICY_DIR
from hierrouter_graph.loading_errors import LoadError
from hierrouter_graph.policy.dynamic import DescriptorPolicy
from hierrouter_graph.policy.encoder import TextEncoder

POOL = ["small", "medium", "large"]


def _policy(hidden: int = 16, seed: int = 0) -> RouterPolicy:
    torch.manual_seed(seed)
    return RouterPolicy(POOL, encoder_name="enc", embedding_dim=8, hidden_size=hidden, stage_dim=4)


def _saved(tmp_path: Path, hidden: int = 16) -> Path:
    return _policy(hidden).save(tmp_path / "p")


def _meta(folder: Path) -> dict[str, object]:
    return dict(json.loads((folder / "policy.json").read_text()))


def test_missing_files_are_named(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    (folder / "policy.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no policy at .*missing policy\.safetensors"):
        RouterPolicy.load(folder)


def test_truncated_weights_name_the_file(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    weights = folder / "policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(LoadError, match=rf"{weights}: expected the policy weights in safetensors format"):
        RouterPolicy.load(folder)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"format_version": 1, "pool": ["sm', "invalid JSON at line 1 column"),
        ("", "got an empty file"),
        ("[1, 2]", "got a JSON list"),
        ('"policy"', "got a JSON str"),
    ],
    ids=["truncated", "empty", "list", "string"],
)
def test_unreadable_json_names_the_file(tmp_path: Path, content: str, expected: str) -> None:
    folder = _saved(tmp_path)
    (folder / "policy.json").write_text(content)
    with pytest.raises(LoadError, match=expected) as info:
        RouterPolicy.load(folder)
    assert str(folder / "policy.json") in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("pool", None, "missing field 'pool'"),
        ("hidden_size", None, "missing field 'hidden_size'"),
        ("horizon", "two", "field 'horizon' should be an integer"),
        ("encoder", {"name": "enc"}, "missing field 'encoder.dim'"),
    ],
)
def test_wrong_json_shape_names_the_field(tmp_path: Path, key: str, value: object, expected: str) -> None:
    folder = _saved(tmp_path)
    meta = _meta(folder)
    if value is None:
        del meta[key]
    else:
        meta[key] = value
    (folder / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(LoadError, match=expected) as info:
        RouterPolicy.load(folder)
    assert str(folder / "policy.json") in str(info.value)


def test_weights_that_do_not_match_their_json(tmp_path: Path) -> None:
    folder = _saved(tmp_path, hidden=16)
    other = _policy(hidden=32).save(tmp_path / "other")
    shutil.copy(other / "policy.safetensors", folder / "policy.safetensors")
    with pytest.raises(LoadError, match=r"policy\.safetensors: the weights do not match .*policy\.json"):
        RouterPolicy.load(folder)


def test_descriptor_policy_json_missing_descriptors(tmp_path: Path, encoder: TextEncoder) -> None:
    specs = [ModelSpec(name=n, source=f"org/{n}-1B", base_rate=0.001) for n in POOL]
    folder = DescriptorPolicy.for_encoder(specs, encoder, horizon=2).save(tmp_path / "d")
    meta = _meta(folder)
    del meta["descriptors"]
    (folder / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(LoadError, match="missing field 'descriptors'"):
        DescriptorPolicy.load(folder)


def test_save_replaces_the_folder_as_a_whole(tmp_path: Path) -> None:
    folder = _saved(tmp_path, hidden=16)
    (folder / "notes.txt").write_text("kept")
    second = _policy(hidden=32, seed=1)
    second.save(folder, extra={"round": 2})
    loaded = RouterPolicy.load(folder)
    assert _meta(folder)["round"] == 2 and loaded.hidden_size == 32
    for key, tensor in second.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key])
    assert (folder / "notes.txt").read_text() == "kept"  # other files carried over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no staging folder left


def test_save_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = _saved(tmp_path, hidden=16)
    link = tmp_path / "current"
    link.symlink_to(real)
    _policy(hidden=32).save(link)
    assert link.is_symlink() and RouterPolicy.load(real).hidden_size == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "p"]


def test_a_crash_before_the_swap_leaves_the_old_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _saved(tmp_path, hidden=16)
    before = {name: (folder / name).read_bytes() for name in ("policy.json", "policy.safetensors")}

    def crash(staging: Path, target: Path) -> None:
        raise OSError("simulated crash between writing and swapping")

    monkeypatch.setattr(policy_files, "_swap_in", crash)
    with pytest.raises(OSError, match="simulated crash"):
        _policy(hidden=32).save(folder)
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert RouterPolicy.load(folder).hidden_size == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_the_swap_is_one_rename_of_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The two files never change one by one: the only move inside the folder is none at all."""
    folder = _saved(tmp_path)
    moves: list[tuple[str, str]] = []
    real_replace, real_rename = os.replace, os.rename

    def spy_replace(a: str, b: str) -> None:
        moves.append((str(a), str(b)))
        real_replace(a, b)

    def spy_rename(a: str, b: str) -> None:
        moves.append((str(a), str(b)))
        real_rename(a, b)

    monkeypatch.setattr(os, "replace", spy_replace)
    monkeypatch.setattr(os, "rename", spy_rename)
    _policy(hidden=32).save(folder)
    assert not [m for m in moves if Path(m[1]).parent == folder]
    assert RouterPolicy.load(folder).hidden_size == 32


def test_config_validation_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "router.json"
    bad.write_text(json.dumps({"models": [{"name": "a", "source": "x", "base_rate": 0.1}], "horizon": "two"}))
    with pytest.raises(ValidationError, match="horizon") as info:
        RouterConfig.from_file(bad)
    assert str(bad) in str(info.value)


def test_run_cli_prints_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _saved(tmp_path)
    (folder / "policy.json").write_text("[]")

    def main(argv: list[str]) -> int:
        RouterPolicy.load(folder)
        return 0

    assert run_cli(main, []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {folder / 'policy.json'}: expected")
    assert "Traceback" not in err
    with pytest.raises(LoadError):
        run_cli(main, ["--debug"])


def test_empty_query_is_refused_before_anything_loads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def must_not_load() -> RouterConfig:
        raise AssertionError("the config (and so the pool and encoder) was loaded")

    monkeypatch.setattr(cli_main, "default_config", must_not_load)
    assert run_cli(cli_main.main, ["   "]) == 2
    assert "query: expected a non-empty string" in capsys.readouterr().err


def test_the_shipped_policy_still_loads() -> None:
    meta = json.loads((DEFAULT_POLICY_DIR / "policy.json").read_text())
    assert RouterPolicy.load(DEFAULT_POLICY_DIR).pool == meta["pool"]
