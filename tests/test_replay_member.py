"""Replay members: the same prompt, price and fingerprint as the loaded member, and no weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.graph import build_pool
from hierrouter_graph.hop import build_hop_messages, hop_key, run_hop
from hierrouter_graph.members.local import build_pool_member
from hierrouter_graph.members.replay import NotLoadedChat, ReplayOnlyMemberError, build_replay_member
from hierrouter_graph.model_spec import ModelSpec
from training.replay.readers import ReplayOnlyCache
from training.replay.store import ReplayStore

LONG = "The query comes first. " + "filler words of the middle " * 60 + "The newest reply comes last."


def _specs(tiny_specs: list[ModelSpec]) -> list[ModelSpec]:
    short_input = tiny_specs[1].model_copy(update={"max_input_tokens": 64})  # forces the middle cut
    cloze = ModelSpec(name="tiny-mc", kind="cloze_mc", source=tiny_specs[0].source, base_rate=0.002)
    named = ModelSpec(name="named-0.5b", source=tiny_specs[0].source, max_new_tokens=4)  # priced by name
    return [tiny_specs[0], short_input, cloze, named]


def test_a_replay_member_agrees_with_the_loaded_one_on_everything_replay_reads(
    tiny_specs: list[ModelSpec], tmp_path: Path
) -> None:
    for spec in _specs(tiny_specs):
        loaded = build_pool_member(spec, tmp_path)
        replay = build_replay_member(spec, tmp_path)
        assert isinstance(replay.chat_model, NotLoadedChat)
        for field in (
            "name",
            "fingerprint",
            "base_rate",
            "system_prompt",
            "max_input_tokens",
            "max_new_tokens",
        ):
            assert getattr(replay, field) == getattr(loaded, field), (spec.name, field)
        assert (replay.cap_new_tokens is None) == (loaded.cap_new_tokens is None)
        for context in ("What is 2 + 2?", LONG):
            ours = build_hop_messages(replay, "Answer.", context)
            theirs = build_hop_messages(loaded, "Answer.", context)
            assert hop_key(ours, 3) == hop_key(theirs, 3)
    cut = build_hop_messages(build_replay_member(_specs(tiny_specs)[1], tmp_path), "Answer.", LONG)
    assert "filler words of the middle " * 60 not in str(cut[-1].content)  # the cut really happened


def test_a_recorded_hop_replays_without_weights_and_a_missing_one_says_what_to_do(
    tiny_specs: list[ModelSpec], tmp_path: Path
) -> None:
    spec = _specs(tiny_specs)[1]
    with ReplayStore(tmp_path / "replay.sqlite") as store:
        recorded = run_hop(build_pool_member(spec, tmp_path), LONG, "Answer.", store)
        replayed = run_hop(build_replay_member(spec, tmp_path), LONG, "Answer.", ReplayOnlyCache(store))
        assert replayed.cached and replace(replayed, cached=False) == recorded
    with pytest.raises(ReplayOnlyMemberError, match="built for replay.*--live"):
        run_hop(build_replay_member(spec, tmp_path), "never recorded", "Answer.")


def test_build_pool_loads_no_weights_for_replay(
    tiny_specs: list[ModelSpec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hierrouter_graph.members.local as models

    def no_weights(*args: object, **kwargs: object) -> None:
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(models, "load_causal_lm", no_weights)
    config = RouterConfig(models=tiny_specs, cache_dir=tmp_path)
    pool = build_pool(config, weights=False)
    assert [member.fingerprint for member in pool.values()] == [spec.fingerprint() for spec in tiny_specs]
