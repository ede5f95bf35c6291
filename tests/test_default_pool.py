"""The default pool: the YAML copy in configs/ cannot drift from ``default_config()``."""

from __future__ import annotations

import json
from pathlib import Path

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.cost import param_count_from_name
from hierrouter_graph.defaults import DEFAULT_POLICY_DIR, default_config
from hierrouter_graph.policy.signature import PolicySignature

REPO = Path(__file__).resolve().parents[1]


def test_the_yaml_copy_is_the_default_pool() -> None:
    written = RouterConfig.from_file(REPO / "configs" / "qwen-coder-pool.yaml")
    assert written.model_dump() == default_config().model_dump()


def test_the_default_pool_runs_cheapest_first_with_int8_qwen_members() -> None:
    config = default_config()
    assert config.model_names == ["smollm2-135m", "cloze-mc", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    sizes = [param_count_from_name(name) for name in config.model_names if name != "cloze-mc"]
    assert sizes == sorted(sizes)  # priced by the size heuristic, so cheapest first
    assert [spec.quantization for spec in config.models if spec.source.startswith("offline:qwen")] == [
        "int8",
        "int8",
    ]
    assert default_config(alpha=0.5).alpha == 0.5  # overrides go through validation


def test_the_shipped_policy_was_trained_for_the_default_pool() -> None:
    """Otherwise ``HierRouterGraph()`` silently routes with an untrained policy."""
    meta = json.loads((DEFAULT_POLICY_DIR / "policy.json").read_text())
    assert not PolicySignature.from_config(default_config()).mismatches(PolicySignature.from_meta(meta))
