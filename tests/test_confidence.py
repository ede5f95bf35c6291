"""The reply's confidence: read off the generation itself, carried through hops, traces and replay."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage

from hierrouter_graph import FixedRoutePolicy, HierRouterGraph, ModelSpec, RouterConfig
from hierrouter_graph.confidence import (
    NEUTRAL_FEATURES,
    Confidence,
    ConfidenceRecorder,
    confidence_features,
    option_confidence,
    reply_lengths,
)
from hierrouter_graph.graph import build_pool
from hierrouter_graph.hop import CachedReply, run_hop, run_hops
from hierrouter_graph.members.pool import PoolMember
from training.replay.store import ReplayStore


def _teacher_forced(gen: Any, messages: list[HumanMessage]) -> Confidence:
    """The reference: generate alone (token ids, not re-tokenized text), then ONE forward pass over
    prompt + reply and the two numbers computed from its logits."""
    prompt_ids = list(gen.tokenizer(gen.counter.render_prompt(messages))["input_ids"])
    with torch.inference_mode():
        output = gen.model.generate(torch.tensor([prompt_ids]), **gen.generate_kwargs)
    reply_ids = output[0, len(prompt_ids) :].tolist()
    stops = gen.generate_kwargs["eos_token_id"]
    stops = [stops] if isinstance(stops, int) else stops
    cut = next((i + 1 for i, t in enumerate(reply_ids) if t in stops), len(reply_ids))
    reply_ids = reply_ids[:cut]
    with torch.inference_mode():
        logits = gen.model(input_ids=torch.tensor([prompt_ids + reply_ids])).logits[0].float().clone()
    logits = logits.clone()
    suppress = gen.generate_kwargs.get("suppress_tokens") or []
    logits[:, suppress] = -math.inf
    steps = logits[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(reply_ids)]
    logprobs = torch.log_softmax(steps, dim=-1)
    chosen = logprobs[torch.arange(len(reply_ids)), torch.tensor(reply_ids)]
    assert torch.equal(steps.argmax(-1), torch.tensor(reply_ids))  # greedy: the chosen token is the argmax
    probs = logprobs.exp()
    entropy = -(probs * torch.where(probs > 0, logprobs, torch.zeros_like(logprobs))).sum(-1)
    return Confidence(float(chosen.mean()), float(entropy.mean()))


def test_generation_confidence_equals_a_teacher_forced_rescoring(tiny_config: RouterConfig) -> None:
    pool = build_pool(tiny_config)
    gen: Any = pool["tiny-a"].batch_generate
    prompts = [[HumanMessage("What is the capital of France?")], [HumanMessage("Two plus two?")]]
    batched = gen.generate_scored(prompts)  # one left-padded generate for both
    assert [text for text, _ in batched] == gen(prompts)
    for messages, (_, in_batch) in zip(prompts, batched, strict=True):
        ((_, alone),) = gen.generate_scored([messages])
        reference = _teacher_forced(gen, messages)
        for confidence in (alone, in_batch):
            assert confidence is not None
            assert confidence.mean_logprob == pytest.approx(reference.mean_logprob, abs=1e-4)
            assert confidence.mean_entropy == pytest.approx(reference.mean_entropy, abs=1e-4)
        assert reference.mean_logprob < 0 and reference.mean_entropy > 0  # a random model is unsure


def test_sampling_reports_no_confidence(tiny_specs: list[ModelSpec], tmp_path: Path) -> None:
    spec = tiny_specs[0].model_copy(update={"generation_kwargs": {"do_sample": True, "top_k": 5}})
    config = RouterConfig(models=[spec], horizon=1, cache_dir=tmp_path)
    gen = build_pool(config)["tiny-a"].batch_generate
    ((text, confidence),) = gen.generate_scored([[HumanMessage("hi")]])  # type: ignore[union-attr]
    assert isinstance(text, str) and confidence is None


def test_reply_lengths_stop_at_the_first_stop_token() -> None:
    new_tokens = torch.tensor([[5, 6, 2, 2, 2], [5, 6, 7, 8, 9], [2, 2, 2, 2, 2]])
    assert reply_lengths(new_tokens, [2]) == [3, 5, 1]
    assert reply_lengths(new_tokens, []) == [5, 5, 5]


def test_recorder_averages_only_each_rows_own_steps() -> None:
    recorder = ConfidenceRecorder()
    certain = torch.tensor([[0.0, -1e9], [0.0, 0.0]])  # row 0: certain; row 1: a coin flip
    for _ in range(3):
        assert recorder(torch.zeros(2, 1, dtype=torch.long), certain) is certain  # scores unchanged
    row0, row1 = recorder.summarize([1, 3])
    assert row0 is not None and row1 is not None
    assert (row0.mean_logprob, row0.mean_entropy) == pytest.approx((0.0, 0.0), abs=1e-6)
    assert (row1.mean_logprob, row1.mean_entropy) == pytest.approx((-math.log(2), math.log(2)))


def test_option_confidence_of_a_tie_and_of_a_clear_winner() -> None:
    tie = option_confidence([-3.0] * 4)
    assert (tie.mean_logprob, tie.mean_entropy) == pytest.approx((-math.log(4), math.log(4)))
    clear = option_confidence([-1.0, -40.0, -40.0])
    assert clear.mean_logprob == pytest.approx(0.0, abs=1e-9) and clear.mean_entropy < 1e-9


def test_features_are_neutral_when_unknown_and_flagged_when_known() -> None:
    assert confidence_features(None) == NEUTRAL_FEATURES
    assert confidence_features({"mean_logprob": -0.5, "mean_entropy": 1.25}) == (-0.5, 1.25, 1.0)
    with pytest.raises(ValueError, match="mean_logprob"):
        confidence_features({"entropy": 1.0})
    with pytest.raises(ValueError, match="log-probability"):
        Confidence(0.5, 1.0)


def test_the_trace_carries_the_confidence_of_local_hops_and_none_for_others(
    tiny_config: RouterConfig,
) -> None:
    tiny_a = build_pool(tiny_config)["tiny-a"]
    fake = PoolMember(
        name="tiny-b",
        chat_model=FakeListChatModel(responses=["a reply"] * 4),
        base_rate=0.003,
        counter=tiny_a.counter,
    )
    route = FixedRoutePolicy(tiny_config.model_names, ["tiny-a", "tiny-b"])
    router = HierRouterGraph(tiny_config, route, chat_models={"tiny-a": tiny_a, "tiny-b": fake})
    out = router.invoke("Largest planet?")
    local, other = out["trace"]
    assert local["confidence"] is not None and local["confidence"]["mean_logprob"] < 0
    assert other["confidence"] is None  # a chat model without log-probs


def test_run_hop_and_run_hops_agree_and_replay_the_confidence(
    tiny_config: RouterConfig, tmp_path: Path
) -> None:
    pool = build_pool(tiny_config)
    store = ReplayStore(tmp_path / "replay.sqlite")
    live = run_hop(pool["tiny-a"], "Name a colour.", "Answer briefly.")
    (batched,) = run_hops(pool["tiny-a"], ["Name a colour."], "Answer briefly.", store)
    assert batched.reply == live.reply and live.confidence is not None
    assert batched.confidence == pytest.approx(live.confidence)
    replayed = run_hop(pool["tiny-a"], "Name a colour.", "Answer briefly.", store)
    assert replayed.cached and replayed.confidence == batched.confidence


def test_replay_store_keeps_exports_and_backfills_confidences(tmp_path: Path) -> None:
    store = ReplayStore(tmp_path / "a.sqlite")
    sure = Confidence(-0.25, 0.5)
    store.put_many([("fp", "p1", CachedReply("r1", 3, 2, sure)), ("fp", "p2", CachedReply("r2", 4, 1))])
    got1, got2 = store.get("fp", "p1"), store.get("fp", "p2")
    assert got1 is not None and got1.confidence == sure
    assert got2 is not None and got2.confidence is None
    assert [prompt for prompt, _ in store.replies_without_confidence("fp")] == ["p2"]
    assert store.put_confidences([("fp", "p2", Confidence(-1.0, 2.0), "teacher_forced")]) == 1
    assert store.put_confidences([("fp", "p2", Confidence(-9.0, 9.0), "teacher_forced")]) == 0  # first wins
    assert store.replies_without_confidence("fp") == []
    with pytest.raises(ValueError, match="source"):
        store.put_confidences([("fp", "p1", sure, "guessed")])
    store.export_jsonl_gz(tmp_path / "out.jsonl.gz")
    other = ReplayStore(tmp_path / "b.sqlite")
    assert other.import_jsonl_gz(tmp_path / "out.jsonl.gz") == 2
    back = other.get("fp", "p2")
    assert back is not None and back.confidence == Confidence(-1.0, 2.0)
