"""The shipped default policy routes recorded contexts exactly as it did before the explicit
``RoutingPolicy.decide`` contract (issue 29): decisions captured then, in
``shipped_policy_decisions.json``, are compared with the graph's step (``route.decide_next``) now.

The contexts are the first six distinct queries of the shipped qwen-coder-pool record (stage 0) and
each with its recorded stage-0 reply appended (stage 1, with a confidence and α in the state, which
this fixed-α, confidence-free policy must ignore).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from hierrouter_graph.defaults import default_config, default_policy
from hierrouter_graph.hop import extend_context
from hierrouter_graph.route import RouteState, decide_next

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "training" / "data" / "qwen-coder-pool.replay.jsonl.gz"
EXPECTED = Path(__file__).with_name("shipped_policy_decisions.json")


def recorded_cases(stage_prompt: str, count: int) -> list[tuple[str, str]]:
    """(query, its stage-0 reply) of the record's first ``count`` distinct stage-0 hops."""
    head = "human\x1f" + stage_prompt + "\n\n"
    cases: dict[str, str] = {}
    with gzip.open(RECORD, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record["prompt"].startswith(head):
                cases.setdefault(record["prompt"][len(head) :], record["reply"])
                if len(cases) == count:
                    break
    return list(cases.items())


def check(decision: Any, expected: list[Any]) -> None:
    model, probs, value = expected
    assert decision.model == model
    assert decision.probs == pytest.approx(probs, abs=1e-6)
    assert decision.value == pytest.approx(value, abs=1e-6)


def test_the_shipped_policy_decides_as_before_the_explicit_contract() -> None:
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))
    config = default_config()
    policy = default_policy(config)
    cases = recorded_cases(config.stage_prompt(0), len(expected))
    assert [query[:40] for query, _ in cases] == [case["query_head"] for case in expected]
    for (query, reply), case in zip(cases, expected, strict=True):
        first = RouteState.start(query, alpha=config.alpha)
        check(decide_next(policy, first, config.allow_stop), case["stage0"])
        confidence = {"mean_logprob": -0.4, "mean_entropy": 0.9}
        second = RouteState(
            query, extend_context(query, reply), 1, 0.25, confidence=confidence, alpha=config.alpha
        )
        check(decide_next(policy, second, config.allow_stop), case["stage1"])
    assert {case["stage1"][0] for case in expected} == {"qwen2.5-coder-0.5b", "cloze-mc"}  # not one answer
