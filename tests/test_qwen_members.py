"""The real Qwen2.5-Coder members, assembled from their PyPI slices (integration: ~3 minutes)."""

from __future__ import annotations

import pytest

from hierrouter_graph import FixedRoutePolicy, HierRouterGraph, ModelSpec, RouterConfig
from hierrouter_graph.config import default_cache_dir
from hierrouter_graph.members.local import load_causal_lm
from hierrouter_graph.offline import QWEN_CODER_05B, QWEN_CODER_15B

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("split", [QWEN_CODER_05B, QWEN_CODER_15B], ids=["0.5b", "1.5b"])
def test_slices_assemble_to_the_published_file(split: object) -> None:
    from hierrouter_graph.offline import SplitGGUF

    assert isinstance(split, SplitGGUF)
    path = split.assemble(default_cache_dir())  # size and sha256 checked inside
    assert path.stat().st_size == split.size
    assert path.read_bytes()[:4] == b"GGUF"


def test_qwen_05b_int8_answers_through_the_graph() -> None:
    spec = ModelSpec(
        name="qwen2.5-coder-0.5b",
        source="offline:qwen2.5-coder-0.5b-instruct",
        quantization="int8",
        max_new_tokens=16,
    )
    config = RouterConfig(models=[spec], horizon=1, stage_prompts=["Answer with the number only."])
    router = HierRouterGraph(config, FixedRoutePolicy(config.model_names, ["qwen2.5-coder-0.5b"]))
    out = router.invoke("What is 17 + 25?")
    assert "42" in out["answer"]
    hop = out["trace"][0]
    assert 0 < hop["tokens_out"] <= 16 + 2
    assert out["cost"] == pytest.approx(0.0005 * (hop["tokens_in"] + hop["tokens_out"]))  # 0.5B → 0.001/B
    assert load_causal_lm(spec, default_cache_dir()).backend.endswith("int8(kept: down_proj)")
