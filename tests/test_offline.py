"""GGUF conversion is done once and is safe against a kill halfway (temp folder, then rename)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import transformers

from hierrouter_graph.offline import convert_gguf_to_folder


@pytest.fixture()
def fake_gguf_loading(monkeypatch: pytest.MonkeyPatch, tiny_folders: dict[str, Path]) -> dict[str, int]:
    """Route from_pretrained(dir, gguf_file=...) to a tiny model, counting loads."""
    calls = {"model": 0}
    real_model, real_tok = (
        transformers.AutoModelForCausalLM.from_pretrained,
        transformers.AutoTokenizer.from_pretrained,
    )

    def model(path: str, gguf_file: str | None = None, **kw: Any) -> Any:
        calls["model"] += 1
        return real_model(str(tiny_folders["tiny-a"]), **kw)

    def tokenizer(path: str, gguf_file: str | None = None, **kw: Any) -> Any:
        return real_tok(str(tiny_folders["tiny-a"]), **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer)
    return calls


def test_conversion_replaces_torn_output_and_runs_once(
    tmp_path: Path, fake_gguf_loading: dict[str, int]
) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    target = tmp_path / "models" / "model"
    (target).mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a torn earlier conversion: no completion marker
    stale = tmp_path / "models" / ".model.tmp-123"
    stale.mkdir()
    out = convert_gguf_to_folder(gguf, target, chat_template="{{ messages }}")
    assert out == target and (target / "hierrouter-converted.json").is_file()
    assert (target / "model.safetensors").is_file() and not stale.exists()
    assert transformers.AutoModelForCausalLM.from_pretrained(str(target)) is not None
    convert_gguf_to_folder(gguf, target)
    assert fake_gguf_loading["model"] == 2  # one conversion + the explicit load above; no reconversion


def test_a_crash_halfway_leaves_nothing_trusted(
    tmp_path: Path, fake_gguf_loading: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    target = tmp_path / "models" / "model"
    target.parent.mkdir(parents=True)

    def die(self: Any, *args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(transformers.PreTrainedTokenizerBase, "save_pretrained", die)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf_to_folder(gguf, target)
    assert not target.exists()
    assert not list(target.parent.glob(".model.tmp-*"))


def test_one_conversion_parses_the_gguf_once(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    from hierrouter_graph.offline import _gguf_parsed_once

    paths = [tmp_path / "a.gguf", tmp_path / "b.gguf"]
    for path in paths:
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_array("tokenizer.ggml.tokens", ["x", "y", "z"])
        writer.add_tensor("t", np.zeros(4, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    original = gguf.GGUFReader
    with _gguf_parsed_once(paths[0]):
        first, again = gguf.GGUFReader(str(paths[0])), gguf.GGUFReader(tmp_path / "." / "a.gguf")
        other = gguf.GGUFReader(paths[1])
    assert first is again and isinstance(first, original)
    assert other is not first and isinstance(other, original)
    assert gguf.GGUFReader is original
    assert "tokenizer.ggml.tokens" in first.fields and [t.name for t in first.tensors] == ["t"]
