"""The real Qwen2.5-Coder-0.5B as a program member on two GSM8K train-split items: it writes
programs and the sandbox really runs them (integration; no assertion on correctness)."""

from __future__ import annotations

import pytest

from hierrouter_graph import FixedRoutePolicy, HierRouterGraph, ModelSpec, RouterConfig
from training.tasks.routing_data import load_items

pytestmark = pytest.mark.integration

SANDBOX_REASONS = {"ok", "error", "incomplete", "timeout", "memory", "killed"}


def test_qwen_05b_program_member_runs_its_programs_on_gsm8k_train_items() -> None:
    items, info = load_items(tasks=["gsm8k"], per_task=10)
    assert info["split"] == "train"
    spec = ModelSpec(
        name="qwen2.5-coder-0.5b-program",
        kind="program",
        source="offline:qwen2.5-coder-0.5b-instruct",
        quantization="int8",
        max_new_tokens=256,
    )
    config = RouterConfig(
        models=[spec], horizon=1, stage_prompts=["Solve the problem with a Python program."]
    )
    router = HierRouterGraph(config, FixedRoutePolicy(config.model_names, [spec.name]))
    outputs = router.batch([item.prompt for item in items[:2]])
    statuses = []
    for out in outputs:
        (hop,) = out["trace"]
        program = hop["program"]
        statuses.append(program["status"])
        print(f"\n--- {program['status']} (exit {program['returncode']})\n{hop['reply']}")
        if program["status"] != "no_program":
            assert program["status"] in SANDBOX_REASONS and hop["reply"].startswith("```python\n")
            assert f"```output\n{program['output']}" in hop["reply"]
        assert hop["cost"] == 0.0005 * (hop["tokens_in"] + hop["tokens_out"])  # execution_cost 0
    assert any(status in SANDBOX_REASONS for status in statuses), statuses
