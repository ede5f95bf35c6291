"""Per-stage reply budgets (``RouterConfig.stage_max_new_tokens``) on the tiny local models.

The tiny models never emit EOS (special tokens are suppressed), so every reply runs to its budget:
a capped stage's reply is a strict prefix of the uncapped one (greedy decoding is causal), and a
cap looser than the member's own budget changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hierrouter_graph import HierRouterGraph, ModelSpec, RouterConfig
from hierrouter_graph.graph import build_pool
from hierrouter_graph.hop import (
    CachedReply,
    answer_text,
    applied_budget,
    build_hop_messages,
    cache_key,
    hop_key,
    messages_from_cache_key,
    run_hop,
    run_hops,
)
from hierrouter_graph.policy.protocol import FixedRoutePolicy

QUERY = "What is two plus two?"


class DictCache:
    """The smallest ReplyCache: what was put, by (fingerprint, key)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], CachedReply] = {}

    def get(self, fingerprint: str, prompt: str) -> CachedReply | None:
        return self.rows.get((fingerprint, prompt))

    def put(self, fingerprint: str, prompt: str, reply: CachedReply) -> None:
        self.rows[(fingerprint, prompt)] = reply


def config(specs: list[ModelSpec], root: Path, caps: list[int] | None) -> RouterConfig:
    return RouterConfig(models=specs, horizon=2, stage_max_new_tokens=caps, cache_dir=root / "cache")


def test_caps_are_validated_and_read_per_stage(tiny_specs: list[ModelSpec], tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"stage_max_new_tokens\[1\] must be >= 1"):
        config(tiny_specs, tmp_path, [5, 0])
    capped = config(tiny_specs, tmp_path, [5])
    assert [capped.stage_token_cap(s) for s in (0, 1, 7)] == [5, None, None]


@pytest.mark.parametrize("batched", [True, False], ids=["micro-batched", "plain pipeline"])
def test_a_stage_cap_cuts_only_that_stages_replies(
    tiny_specs: list[ModelSpec], tmp_path: Path, batched: bool
) -> None:
    specs = [s if batched else s.model_copy(update={"max_batch_size": 1}) for s in tiny_specs]
    route = FixedRoutePolicy(["tiny-a", "tiny-b"], ["tiny-a", "tiny-a"])
    free = HierRouterGraph(config(specs, tmp_path, None), route).invoke(QUERY)
    capped = HierRouterGraph(config(specs, tmp_path, [100, 3]), route).invoke(QUERY)
    # stage 0: a cap of 100 is looser than tiny-a's 8 tokens, so nothing changes
    assert capped["trace"][0]["reply"] == free["trace"][0]["reply"]
    assert capped["trace"][0]["tokens_out"] == free["trace"][0]["tokens_out"]
    # stage 1: cut to 3 new tokens, a prefix of what the member's own budget gives
    short, full = capped["trace"][1]["reply"], free["trace"][1]["reply"]
    assert short != full and full.startswith(short)
    assert capped["trace"][1]["tokens_out"] < free["trace"][1]["tokens_out"]
    assert capped["answer"] == answer_text([hop["reply"] for hop in capped["trace"]])


def test_capped_hops_replay_under_their_own_key_and_batch_like_single_hops(
    tiny_specs: list[ModelSpec], tmp_path: Path
) -> None:
    cfg = config(tiny_specs, tmp_path, [3])
    member = build_pool(cfg)["tiny-a"]
    assert applied_budget(member, 3) == 3
    assert applied_budget(member, 8) is None and applied_budget(member, None) is None  # tiny-a: 8
    contexts = [QUERY, "Name a colour.", "Count to three, please."]
    cache = DictCache()
    batched = run_hops(member, contexts, "Answer.", cache, max_new_tokens=3)
    alone = [run_hop(member, c, "Answer.", None, max_new_tokens=3) for c in contexts]
    assert [h.reply for h in batched] == [h.reply for h in alone]
    messages = build_hop_messages(member, "Answer.", QUERY)
    key = hop_key(messages, 3)
    assert key != cache_key(messages) and (member.fingerprint, key) in cache.rows
    assert messages_from_cache_key(key) == messages  # the budget never leaks into the prompt
    assert cache.get(member.fingerprint, cache_key(messages)) is None  # never replayed uncapped
    assert run_hop(member, QUERY, "Answer.", cache, max_new_tokens=3).cached
