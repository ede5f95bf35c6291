"""`prepare`: every local model converted once, ahead of use, several at once; errors name the source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hierrouter_graph import ModelSpec, RouterConfig
from hierrouter_graph.__main__ import main
from hierrouter_graph.members.prepare import local_sources, prepare_models
from hierrouter_graph.members.sources import ModelSourceError
from hierrouter_graph.model_spec import EndpointSpec
from tests.test_offline import fake_gguf_loading  # noqa: F401 (a fixture)


def test_sources_are_deduplicated_largest_first_and_endpoints_skipped() -> None:
    config = RouterConfig(
        models=[
            ModelSpec(name="small", source="offline:smollm2-135m-instruct"),
            ModelSpec(name="persona", source="offline:smollm2-135m-instruct", system_prompt="Be brief."),
            ModelSpec(name="big", source="offline:qwen2.5-coder-1.5b-instruct"),
            ModelSpec(
                name="remote",
                source="some/model",
                base_rate=0.01,
                endpoint=EndpointSpec(url="http://127.0.0.1:9/v1"),
            ),
        ]
    )
    assert local_sources(config) == {
        "offline:qwen2.5-coder-1.5b-instruct": ("big",),
        "offline:smollm2-135m-instruct": ("small", "persona"),
    }


def test_each_gguf_is_converted_once(
    tmp_path: Path,
    fake_gguf_loading: dict[str, int],  # noqa: F811
) -> None:
    ggufs = []
    for name in ("one", "two"):
        ggufs.append(tmp_path / f"{name}.gguf")
        ggufs[-1].write_bytes(b"GGUF")
    specs = [ModelSpec(name=f"m{i}", source=str(path)) for i, path in enumerate(ggufs)]
    config = RouterConfig(models=specs, cache_dir=tmp_path / "cache")
    first = prepare_models(config, jobs=1)
    assert fake_gguf_loading["model"] == 2
    assert all((Path(model.folder) / "config.json").is_file() for model in first)
    again = prepare_models(config, jobs=1)
    assert fake_gguf_loading["model"] == 2  # already converted: nothing loaded
    assert [model.folder for model in again] == [model.folder for model in first]


def test_parallel_workers_return_every_source_and_carry_errors_back(
    tiny_folders: dict[str, Path], tmp_path: Path
) -> None:
    specs = [ModelSpec(name=name, source=str(folder)) for name, folder in tiny_folders.items()]
    config = RouterConfig(models=specs, cache_dir=tmp_path / "cache")
    prepared = prepare_models(config, jobs=2)
    assert sorted((model.members, model.folder) for model in prepared) == [
        (("tiny-a",), str(tiny_folders["tiny-a"])),
        (("tiny-b",), str(tiny_folders["tiny-b"])),
    ]
    missing = tmp_path / "nowhere.gguf"
    broken = RouterConfig(models=[*specs, ModelSpec(name="gone", source=str(missing))], cache_dir=tmp_path)
    with pytest.raises(ModelSourceError, match="nowhere.gguf"):
        prepare_models(broken, jobs=2)
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        prepare_models(config, jobs=0)


def test_the_command_prints_a_line_per_model(
    tiny_folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pool.json"
    models = [{"name": name, "source": str(folder)} for name, folder in tiny_folders.items()]
    path.write_text(json.dumps({"models": models, "cache_dir": str(tmp_path / "cache")}))
    assert main(["prepare", "--config", str(path), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert f"tiny-a: {tiny_folders['tiny-a']} -> {tiny_folders['tiny-a']}" in out
    assert "2 model(s) ready" in out
