from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from hierrouter_graph import PoolMember, run_hop
from hierrouter_graph.hop import CachedReply, TokenCountUnavailableError, extend_context


class _UsageModel(FakeListChatModel):
    """A chat model that reports usage, like an inference endpoint does."""

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        text = self.responses[0]
        message = AIMessage(text, usage_metadata={"input_tokens": 40, "output_tokens": 7, "total_tokens": 47})
        return ChatResult(generations=[ChatGeneration(message=message)])


class _DictCache:
    def __init__(self) -> None:
        self.store: dict[tuple[str, str], CachedReply] = {}

    def get(self, fingerprint: str, prompt: str) -> CachedReply | None:
        return self.store.get((fingerprint, prompt))

    def put(self, fingerprint: str, prompt: str, reply: CachedReply) -> None:
        self.store[(fingerprint, prompt)] = reply


def test_usage_metadata_prices_the_hop() -> None:
    member = PoolMember("remote", _UsageModel(responses=["forty-two"]), base_rate=0.01)
    result = run_hop(member, "What is 6*7?", "Solve.")
    assert (result.tokens_in, result.tokens_out) == (40, 7)
    assert result.cost == pytest.approx(0.47)
    assert result.prompt == "Solve.\n\nWhat is 6*7?"


def test_without_usage_or_tokenizer_the_hop_refuses_to_guess() -> None:
    member = PoolMember("opaque", FakeListChatModel(responses=["x"]), base_rate=0.01)
    with pytest.raises(TokenCountUnavailableError, match="opaque"):
        run_hop(member, "q", "Solve.")


def test_cache_replays_without_calling_the_model() -> None:
    model = _UsageModel(responses=["first"])
    member = PoolMember("remote", model, base_rate=0.01, fingerprint="fp-1")
    cache = _DictCache()
    first = run_hop(member, "q", "Solve.", cache=cache)
    model.responses = ["second"]
    again = run_hop(member, "q", "Solve.", cache=cache)
    assert (again.reply, again.cached, first.cached) == ("first", True, False)
    assert again.cost == first.cost
    other = run_hop(
        PoolMember("remote", model, base_rate=0.01, fingerprint="fp-2"), "q", "Solve.", cache=cache
    )
    assert other.reply == "second" and not other.cached


def test_context_grows_by_appending() -> None:
    assert extend_context("q", "r1") == "q\n\nr1"
    assert extend_context(extend_context("q", "r1"), "r2") == "q\n\nr1\n\nr2"


def test_negative_base_rate_is_rejected() -> None:
    with pytest.raises(ValueError, match="base_rate"):
        PoolMember("m", FakeListChatModel(responses=["x"]), base_rate=-1)


def test_batched_hops_equal_single_hops(tiny_config) -> None:
    from hierrouter_graph.graph import build_pool
    from hierrouter_graph.hop import run_hops

    member = build_pool(tiny_config)["tiny-a"]
    contexts = [
        "What is seven times six?",
        "def add(a, b):",
        "Which planet is largest? A. Mars B. Jupiter",
        "q",
    ]
    single = [run_hop(member, c, "Solve.") for c in contexts]
    cache = _DictCache()
    batched = run_hops(member, contexts, "Solve.", cache=cache)
    assert [b.reply for b in batched] == [s.reply for s in single]
    assert [(b.tokens_in, b.tokens_out, b.cost) for b in batched] == [
        (s.tokens_in, s.tokens_out, s.cost) for s in single
    ]
    assert len(cache.store) == 4 and not any(b.cached for b in batched)
    assert all(b.cached for b in run_hops(member, contexts, "Solve.", cache=cache))


# ------------------------------------------------------------------------------ answer_text


def test_answer_text_is_the_last_reply() -> None:
    from hierrouter_graph.hop import answer_text

    assert answer_text(["plan", "solution"]) == "solution"
    assert answer_text(["B. Carbon dioxide", "B. Carbon dioxide"]) == "B. Carbon dioxide"  # not twice
    assert answer_text(["first\n\nwith a blank line"]) == "first\n\nwith a blank line"
    assert answer_text([]) == ""


def test_answer_text_skips_a_specialists_refusal_or_an_empty_reply() -> None:
    from hierrouter_graph.hop import answer_text
    from hierrouter_graph.members.cloze import REFUSAL

    assert answer_text(["42", REFUSAL]) == "42"
    assert answer_text([REFUSAL, "42"]) == "42"
    assert answer_text(["a", REFUSAL, "b"]) == "b"
    assert answer_text(["a", "  "]) == "a"
    # a reply that merely quotes the refusal inside a longer text is an answer, kept whole
    quoting = f"He said: {REFUSAL} Then 7."
    assert answer_text(["x", quoting]) == quoting


def test_answer_text_keeps_the_refusal_when_nothing_else_answered() -> None:
    from hierrouter_graph.hop import answer_text
    from hierrouter_graph.members.cloze import REFUSAL

    assert answer_text([REFUSAL, REFUSAL]) == REFUSAL


def test_the_route_state_answers_with_its_last_reply() -> None:
    from hierrouter_graph.hop import HopResult
    from hierrouter_graph.members.cloze import REFUSAL
    from hierrouter_graph.route import RouteState, advance

    def hop(reply: str) -> HopResult:
        return HopResult(model="m", prompt="p", reply=reply, tokens_in=1, tokens_out=1, cost=0.5)

    state = advance(advance(RouteState.start("q?"), "m", hop("7")), "m", hop(REFUSAL))
    assert state.replies == ("7", REFUSAL) and state.answer == "7"
    assert state.context == f"q?\n\n7\n\n{REFUSAL}" and state.cost == 1.0
