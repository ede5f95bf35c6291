"""Backfilled confidences (one teacher-forced forward) equal the ones generation records."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from hierrouter_graph import RouterConfig
from hierrouter_graph.graph import build_pool
from hierrouter_graph.hop import (
    CachedReply,
    build_hop_messages,
    cache_key,
    extend_context,
    messages_from_cache_key,
    run_hops,
)
from training.replay.backfill_confidence import backfill
from training.replay.store import ReplayStore

QUERIES = ["Name a colour.", "What is two plus two?", "Say hello to the reader in French, please."]


def _reply_round_trips(generator: Any, key: str) -> bool:
    """Whether the reply's text tokenizes back to the ids greedy generation produced."""
    prompt_ids = list(
        generator.tokenizer(generator.counter.render_prompt(messages_from_cache_key(key)))["input_ids"]
    )
    with torch.inference_mode():
        output = generator.model.generate(torch.tensor([prompt_ids]), **generator.generate_kwargs)
    ids = [
        t
        for t in output[0, len(prompt_ids) :].tolist()
        if t not in (generator.generate_kwargs["eos_token_id"])
    ]
    text = generator.tokenizer.decode(ids, skip_special_tokens=True)
    return list(generator.tokenizer(text, add_special_tokens=False)["input_ids"]) == ids


def test_messages_round_trip_through_the_replay_key(tiny_config: RouterConfig) -> None:
    pool = build_pool(tiny_config)
    for name in ("tiny-a", "tiny-b"):  # tiny-b has a system prompt
        messages = build_hop_messages(pool[name], tiny_config.stage_prompt(0), QUERIES[0])
        assert cache_key(messages_from_cache_key(cache_key(messages))) == cache_key(messages)
    with pytest.raises(ValueError, match="'ai' message"):
        messages_from_cache_key("ai\x1fhello")


def test_backfill_reproduces_the_generation_confidence_of_decision_hops(
    tiny_config: RouterConfig, tmp_path: Path
) -> None:
    pool = build_pool(tiny_config)
    generated = ReplayStore(tmp_path / "generated.sqlite")  # what record.py writes now
    stage0 = {name: run_hops(pool[name], QUERIES, tiny_config.stage_prompt(0), generated) for name in pool}
    contexts = [extend_context(q, hop.reply) for q, hop in zip(QUERIES, stage0["tiny-a"], strict=True)]
    last = run_hops(pool["tiny-b"], contexts, tiny_config.stage_prompt(1), generated)
    old = ReplayStore(tmp_path / "old.sqlite")  # a store recorded before confidences existed
    rows = []
    for name, hops in [*stage0.items(), ("tiny-b", last)]:
        for _hop, context in zip(hops, QUERIES if hops is not last else contexts, strict=True):
            stage = 1 if hops is last else 0
            key = cache_key(build_hop_messages(pool[name], tiny_config.stage_prompt(stage), context))
            stored = generated.get(pool[name].fingerprint, key)
            assert stored is not None and stored.confidence is not None
            rows.append((pool[name].fingerprint, key, dataclasses.replace(stored, confidence=None)))
    old.put_many(rows)

    added = backfill(old, tiny_config, pool, progress=False)
    assert added == {"tiny-a": 3, "tiny-b": 3}  # stage 0 only: L=2 decides after stage 0, never after 1
    compared = 0
    for fingerprint, key, _ in rows:
        want, got = generated.get(fingerprint, key), old.get(fingerprint, key)
        assert want is not None and got is not None
        if key.endswith(tuple(contexts)):
            assert got.confidence is None  # the last stage's reply is never read by the router
            continue
        assert want.confidence is not None and got.confidence is not None
        name = next(n for n in pool if pool[n].fingerprint == fingerprint)
        if not _reply_round_trips(pool[name].batch_generate, key):
            continue  # random tiny models emit byte tokens whose text re-tokenizes differently
        compared += 1
        assert got.confidence.mean_logprob == pytest.approx(want.confidence.mean_logprob, abs=1e-4)
        assert got.confidence.mean_entropy == pytest.approx(want.confidence.mean_entropy, abs=1e-4)
    assert compared >= 2, "no reply re-tokenized to its generated ids: the comparison proved nothing"
    assert backfill(old, tiny_config, pool, progress=False) == {"tiny-a": 0, "tiny-b": 0}  # idempotent
    assert backfill(old, tiny_config, pool, stages="all", progress=False) == {"tiny-a": 0, "tiny-b": 3}


def test_backfill_can_be_limited_to_the_trees_of_given_queries(
    tiny_config: RouterConfig, tmp_path: Path
) -> None:
    pool = build_pool(tiny_config)
    store = ReplayStore(tmp_path / "r.sqlite")
    hops = run_hops(pool["tiny-a"], QUERIES, tiny_config.stage_prompt(0))  # no store: nothing recorded
    for query, hop in zip(QUERIES, hops, strict=True):
        key = cache_key(build_hop_messages(pool["tiny-a"], tiny_config.stage_prompt(0), query))
        store.put(pool["tiny-a"].fingerprint, key, CachedReply(hop.reply, hop.tokens_in, hop.tokens_out))
    added = backfill(store, tiny_config, pool, queries=QUERIES[:1], progress=False)
    assert added == {"tiny-a": 1, "tiny-b": 0}
    assert len(store.replies_without_confidence(pool["tiny-a"].fingerprint)) == 2
