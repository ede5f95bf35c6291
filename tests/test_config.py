from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from hierrouter_graph import PAPER_STAGE_PROMPTS, ModelSpec, RouterConfig
from hierrouter_graph.cost import base_rate_from_param_count, hop_cost, param_count_from_name
from hierrouter_graph.members.sources import ModelSourceError, resolve_model_folder


def _spec(name: str = "m", **kw: object) -> dict[str, object]:
    return {"name": name, "source": "offline:smollm2-135m-instruct", **kw}


def test_defaults_follow_the_paper() -> None:
    config = RouterConfig(models=[ModelSpec(**_spec())])
    assert config.horizon == 2
    assert config.alpha == 0.005
    assert config.stage_prompts == list(PAPER_STAGE_PROMPTS)
    assert config.max_seq_len == 512
    assert config.encoder == "all-MiniLM-L6-v2"
    assert config.stage_prompt(1).startswith("Using the previous analysis")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"models": []}, "models"),
        ({"models": [_spec()], "horizon": 0}, "horizon"),
        ({"models": [_spec()], "alpha": -1}, "alpha"),
        ({"models": [_spec(max_new_tokens=0)]}, "max_new_tokens"),
        ({"models": [_spec(name="has space")]}, "name"),
        ({"models": [_spec(name="router")]}, "name"),
        ({"models": [_spec(device="tpu")]}, "device"),
        ({"models": [_spec(dtype="int4")]}, "dtype"),
        ({"models": [_spec(base_rate=-0.1)]}, "base_rate"),
        ({"models": [_spec(), _spec()]}, "unique"),
        ({"models": [_spec()], "horizon": 3}, "stage_prompts"),
        ({"models": [_spec()], "stage_prompts": ["ok", "  "]}, "stage_prompts"),
        ({"models": [_spec()], "unknown_field": 1}, "unknown_field"),
    ],
)
def test_invalid_config_names_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        RouterConfig.model_validate(data)
    assert field in str(raised.value)


def test_horizon_beyond_prompts_uses_fallback() -> None:
    config = RouterConfig(models=[ModelSpec(**_spec())], horizon=4, stage_prompt_fallback="Refine.")
    assert [config.stage_prompt(s) for s in range(4)][2:] == ["Refine.", "Refine."]


def test_yaml_and_json_round_trip(tmp_path: Path) -> None:
    config = RouterConfig(models=[ModelSpec(**_spec(base_rate=0.002))], horizon=1, alpha=0.01)
    for suffix in (".yaml", ".json"):
        path = tmp_path / f"router{suffix}"
        config.to_file(path)
        assert RouterConfig.from_file(path) == config


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        RouterConfig.from_file(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        RouterConfig.from_file(listed)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        RouterConfig.from_file(tmp_path / "missing.yaml")
    bad_field = tmp_path / "bad.json"
    bad_field.write_text(json.dumps({"models": [_spec()], "horizon": "two"}))
    with pytest.raises(ValidationError, match="horizon"):
        RouterConfig.from_file(bad_field)


def test_cost_formula_and_size_heuristic() -> None:
    assert hop_cost(0.003, 100, 50) == pytest.approx(0.45)
    with pytest.raises(ValueError):
        hop_cost(0.003, -1, 0)
    # The paper's table: 3B → 0.003, 8B → 0.008, 14B → 0.014.
    assert base_rate_from_param_count(3_000_000_000) == pytest.approx(0.003)
    assert param_count_from_name("Qwen2.5-Coder-3B-Instruct") == 3_000_000_000
    assert param_count_from_name("Llama-3.1-8B-Instruct") == 8_000_000_000
    assert param_count_from_name("SmolLM2-135M-Instruct") == 135_000_000
    assert param_count_from_name("phi-mini") is None


def test_unknown_sources_say_where_they_looked(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="offline:smollm2-135m-instruct"):
        resolve_model_folder("offline:gpt-5", tmp_path)
    with pytest.raises(ModelSourceError, match="not found.*Tried: local path"):
        resolve_model_folder("./no/such/model-folder", tmp_path)
    with pytest.raises(ModelSourceError, match="GGUF file not found"):
        resolve_model_folder(str(tmp_path / "x.gguf"), tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_model_folder(str(empty), tmp_path)
    assert resolve_model_folder("org/model", tmp_path) == "org/model"


def test_fingerprint_tracks_generation_not_price() -> None:
    base = ModelSpec(**_spec())
    assert base.fingerprint() == ModelSpec(**_spec(base_rate=0.5)).fingerprint()
    assert base.fingerprint() != ModelSpec(**_spec(max_new_tokens=7)).fingerprint()
    assert base.fingerprint() != ModelSpec(**_spec(system_prompt="x")).fingerprint()


def test_an_unparsable_config_is_a_load_error_naming_the_file(tmp_path: Path) -> None:
    """CLIs print LoadError as one line; a YAML syntax error must be one, not a bare ValueError."""
    from hierrouter_graph.loading_errors import LoadError

    bad = tmp_path / "router.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(LoadError, match=r"router\.yaml: not valid YAML"):
        RouterConfig.from_file(bad)
    bad.write_text("- a list\n")
    with pytest.raises(LoadError, match=r"router\.yaml: expected a mapping"):
        RouterConfig.from_file(bad)
