"""The hop: ONE function that runs a pool model on the context for one stage.

Every model node of the graph and the training environment call ``run_hop``; nothing else builds
prompts, counts tokens or prices a call, so what the router is trained on is exactly what it
routes at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from hierrouter_graph.confidence import Confidence
from hierrouter_graph.cost import hop_cost
from hierrouter_graph.members.cloze import REFUSAL
from hierrouter_graph.members.pool import CountedReply, PoolMember
from hierrouter_graph.members.program_reply import NO_PROGRAM, program_trace
from hierrouter_graph.members.remote import RemoteModelError
from hierrouter_graph.state import ProgramTrace

__all__ = [
    "CONTEXT_SEPARATOR",
    "DECLINED_REPLIES",
    "TRUNCATION_MARKER",
    "CachedReply",
    "HopResult",
    "ReplyCache",
    "TokenCountUnavailableError",
    "answer_text",
    "applied_budget",
    "build_hop_messages",
    "cache_key",
    "declined",
    "extend_context",
    "hop_key",
    "messages_from_cache_key",
    "run_hop",
    "run_hop_with_fallback",
    "run_hops",
    "valid_text",
]

CONTEXT_SEPARATOR = "\n\n"
"""c_{t+1} = c_t ‖ r_t: replies are appended to the context with a blank line between them."""

TRUNCATION_MARKER = "\n[…]\n"


class TokenCountUnavailableError(RuntimeError):
    """The chat model reported no usage and the member has no tokenizer to count with."""


@dataclass(frozen=True)
class CachedReply:
    """What a replay store keeps of one generation: enough to replay the hop without the model."""

    reply: str
    tokens_in: int
    tokens_out: int
    confidence: Confidence | None = None
    """How sure the model was of ``reply`` (``confidence.py``); None when it exposed no log-probs."""


class ReplyCache(Protocol):
    """Replay store interface, keyed by (member fingerprint, exact prompt text)."""

    def get(self, fingerprint: str, prompt: str) -> CachedReply | None: ...

    def put(self, fingerprint: str, prompt: str, reply: CachedReply) -> None: ...


@dataclass(frozen=True)
class HopResult:
    """One hop: the prompt as sent, the reply, its token counts and its cost δ_t."""

    model: str
    prompt: str
    reply: str
    tokens_in: int
    tokens_out: int
    cost: float
    cached: bool = False
    confidence: Confidence | None = None
    program: ProgramTrace | None = None
    """Only for a program-aided member: what its program was, printed and exited with."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def extend_context(context: str, reply: str) -> str:
    """c_t ‖ r_t."""
    return f"{context}{CONTEXT_SEPARATOR}{reply}"


DECLINED_REPLIES: tuple[str, ...] = (REFUSAL,)
"""Replies that say "not mine" rather than answer (the cloze specialist's refusal)."""


def declined(reply: str) -> bool:
    """The reply answers nothing: a specialist's refusal (``DECLINED_REPLIES``) or empty text."""
    text = reply.strip()
    return not text or text in DECLINED_REPLIES


def valid_text(text: str) -> str:
    """``text`` with lone surrogates (which ``json.loads`` of an endpoint reply lets through)
    replaced by U+FFFD: every later step (the SQLite store, records, the sandbox) needs valid UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def answer_text(replies: Sequence[str]) -> str:
    """The answer of a finished route: its LAST reply that did not decline.

    Why the last: every stage asks for a complete answer and a later stage checks or improves the
    earlier one, so the final hop's reply is the route's answer — joining the replies would hand
    users (and the reward) an answer repeated or contradicting itself ("B. Carbon dioxide B. Carbon
    dioxide"). A reply that only declined (the cloze specialist on a math query) or came back empty
    is skipped, so ``generalist → cloze-mc`` answers with the generalist's reply. When every reply
    declined, the answer is the last refusal, so the user sees why nothing was answered; a route
    without replies answers "".

    Why one function: the graph returns this text and the reward's Q scores this text, so the
    router is trained on exactly what users get.
    """
    for reply in reversed(replies):
        if not declined(reply):
            return reply
    return replies[-1] if replies else ""


def _user_prompt(instruction: str, context: str) -> str:
    return f"{instruction}{CONTEXT_SEPARATOR}{context}"


def build_hop_messages(member: PoolMember, instruction: str, context: str) -> list[BaseMessage]:
    """Stage instruction + context as the final HumanMessage (after the member's system prompt).

    When the member has an input budget and a tokenizer, an over-long context is cut in the
    middle: the query (head) and the newest reply (tail) are what the next model needs most.
    """
    head: list[BaseMessage] = [SystemMessage(member.system_prompt)] if member.system_prompt else []
    messages = [*head, HumanMessage(_user_prompt(instruction, context))]
    if member.max_input_tokens is None or member.counter is None:
        return messages
    overflow = member.counter.count_prompt(messages) - member.max_input_tokens
    if overflow <= 0:
        return messages
    context_budget = member.counter.count_text(context) - overflow
    if context_budget < 8:
        raise ValueError(
            f"{member.name}: max_input_tokens={member.max_input_tokens} leaves no room for the "
            "context after the system prompt and stage instruction"
        )
    short = member.counter.truncate_middle(context, context_budget, TRUNCATION_MARKER)
    return [*head, HumanMessage(_user_prompt(instruction, short))]


def _usage(message: AIMessage) -> tuple[int, int] | None:
    usage = message.usage_metadata
    if not usage:
        return None
    return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))


def _priced(
    member: PoolMember, reply: str, tokens_in: int, tokens_out: int
) -> tuple[float, ProgramTrace | None]:
    """δ_t of a hop and, for a program-aided member, its program run read off the reply — the
    same for a fresh hop and its replay, which has only the reply (``program_reply.py``)."""
    if not member.runs_programs:
        return hop_cost(member.base_rate, tokens_in, tokens_out), None
    program = program_trace(reply)
    runs = 0 if program["status"] == NO_PROGRAM else 1
    return hop_cost(member.base_rate, tokens_in, tokens_out, runs, member.execution_cost), program


def applied_budget(member: PoolMember, stage_cap: int | None) -> int | None:
    """The reply budget a stage cap imposes on ``member``'s hop, or None (its own budget).

    A cap applies only where it is tighter than the member's ``max_new_tokens`` and the member
    can be capped per call (``PoolMember.cap_new_tokens``: local members; endpoint and user chat
    models keep their own budget).
    """
    if stage_cap is None or member.cap_new_tokens is None:
        return None
    if member.max_new_tokens is not None and stage_cap >= member.max_new_tokens:
        return None
    return stage_cap


def hop_key(messages: list[BaseMessage], budget: int | None = None) -> str:
    """The replay key of a hop: ``cache_key`` of its prompt, plus the budget when a stage cap
    applied (a reply cut at another length is another reply; uncapped keys stay as they were)."""
    key = cache_key(messages)
    return key if budget is None else f"{key}{_BUDGET_MARK}{budget}"


def run_hop(
    member: PoolMember,
    context: str,
    instruction: str,
    cache: ReplyCache | None = None,
    max_new_tokens: int | None = None,
) -> HopResult:
    """Gen(m_t, c_t) and Cost(m_t, c_t): prompt, generate (or replay), count, price.

    Token counts come from the model's own usage report when it sends one (endpoints), else from
    its tokenizer; a member with neither raises rather than inventing a cost. ``max_new_tokens``:
    the stage's cap (``RouterConfig.stage_max_new_tokens``), applied as ``applied_budget`` says.
    """
    messages = build_hop_messages(member, instruction, context)
    prompt = str(messages[-1].content)
    budget = applied_budget(member, max_new_tokens)
    key = hop_key(messages, budget)
    hit = cache.get(member.fingerprint, key) if cache is not None else None
    if hit is not None:
        cost, program = _priced(member, hit.reply, hit.tokens_in, hit.tokens_out)
        return HopResult(
            member.name,
            prompt,
            hit.reply,
            hit.tokens_in,
            hit.tokens_out,
            cost,
            cached=True,
            confidence=hit.confidence,
            program=program,
        )

    capped = member.cap_new_tokens(budget) if budget is not None and member.cap_new_tokens else {}
    message = member.chat_model.invoke(messages, **capped)
    reply = valid_text(message.text if isinstance(message, AIMessage) else str(message.content))
    counts = _usage(message) if isinstance(message, AIMessage) else None
    if counts is None:
        if member.counter is None:
            raise TokenCountUnavailableError(
                f"{member.name}: the chat model reported no usage_metadata and no tokenizer was "
                "given; pass PoolMember(counter=TokenizerCounter(tokenizer)) to price its hops"
            )
        counts = (member.counter.count_prompt(messages), member.counter.count_text(reply))
    tokens_in, tokens_out = counts
    confidence = Confidence.from_any(message.response_metadata.get("confidence"))
    if cache is not None:
        cache.put(member.fingerprint, key, CachedReply(reply, tokens_in, tokens_out, confidence))
    cost, program = _priced(member, reply, tokens_in, tokens_out)
    return HopResult(
        member.name, prompt, reply, tokens_in, tokens_out, cost, confidence=confidence, program=program
    )


def run_hops(
    member: PoolMember,
    contexts: Sequence[str],
    instruction: str,
    cache: ReplyCache | None = None,
    max_new_tokens: int | None = None,
) -> list[HopResult]:
    """``run_hop`` for many contexts of one stage at once (recording the outcome tree).

    Prompts, cache keys, token counts and prices are built exactly as in ``run_hop``; only the
    generation is batched, through the member's ``batch_generate`` (one left-padded ``generate``
    call; its ``generate_scored`` when it has one, which also returns each reply's confidence).
    Members without it fall back to one ``run_hop`` per context.
    """
    budget = applied_budget(member, max_new_tokens)
    scored = getattr(member.batch_generate, "generate_scored", None)
    if member.batch_generate is None or member.counter is None or (budget is not None and scored is None):
        return [run_hop(member, context, instruction, cache, max_new_tokens) for context in contexts]
    all_messages = [build_hop_messages(member, instruction, context) for context in contexts]
    keys = [hop_key(messages, budget) for messages in all_messages]
    hits = [cache.get(member.fingerprint, key) if cache is not None else None for key in keys]
    todo = [i for i, hit in enumerate(hits) if hit is None]
    prompts = [all_messages[i] for i in todo]
    if not todo:
        fresh: list[Any] = []
    elif budget is not None and scored is not None:
        fresh = scored(prompts, max_new_tokens=[budget] * len(prompts))
    else:
        fresh = (scored or member.batch_generate)(prompts)
    for index, generated in zip(todo, fresh, strict=True):
        reply, confidence = (generated, None) if isinstance(generated, str) else generated[:2]
        tokens_out = (
            generated.tokens_out if isinstance(generated, CountedReply) else member.counter.count_text(reply)
        )
        counts = member.counter.count_prompt(all_messages[index]), tokens_out
        hits[index] = CachedReply(reply, *counts, confidence=confidence)
        if cache is not None:
            cache.put(member.fingerprint, keys[index], hits[index])  # type: ignore[arg-type]
    results = []
    for index, (messages, hit) in enumerate(zip(all_messages, hits, strict=True)):
        assert hit is not None
        cost, program = _priced(member, hit.reply, hit.tokens_in, hit.tokens_out)
        results.append(
            HopResult(
                member.name,
                str(messages[-1].content),
                hit.reply,
                hit.tokens_in,
                hit.tokens_out,
                cost,
                cached=index not in todo,
                confidence=hit.confidence,
                program=program,
            )
        )
    return results


def cache_key(messages: list[BaseMessage]) -> str:
    """The replay key of a hop: the exact prompt — every message's role and text (role\\x1ftext,
    \\x1e-joined), so a system-prompt change is a new key."""
    return "\x1e".join(f"{m.type}\x1f{m.content}" for m in messages)


_BUDGET_MARK = "\x1dmax_new_tokens="


def messages_from_cache_key(key: str) -> list[BaseMessage]:
    """The hop's messages back from its replay key (the inverse of ``cache_key``/``hop_key``)."""
    messages: list[BaseMessage] = []
    for part in key.partition(_BUDGET_MARK)[0].split("\x1e"):
        role, _, text = part.partition("\x1f")
        if role == "system":
            messages.append(SystemMessage(text))
        elif role == "human":
            messages.append(HumanMessage(text))
        else:
            raise ValueError(f"replay key holds a {role!r} message; hop prompts hold system/human only")
    return messages


def run_hop_with_fallback(
    member: PoolMember,
    context: str,
    instruction: str,
    fallback: PoolMember | None = None,
    cache: ReplyCache | None = None,
    max_new_tokens: int | None = None,
) -> tuple[HopResult, RemoteModelError | None]:
    """``run_hop`` on ``member``; if its server fails and a fallback is given, on the fallback.

    Returns the hop (the fallback's reply, tokens and price when it stepped in) and the error
    that caused the fallback, for the trace. One level only: a failing fallback fails the query,
    so a hop's worst-case time stays bounded.
    """
    try:
        return run_hop(member, context, instruction, cache, max_new_tokens), None
    except RemoteModelError as error:
        if fallback is None:
            raise
        try:
            return run_hop(fallback, context, instruction, cache, max_new_tokens), error
        except RemoteModelError as second:
            raise RemoteModelError(
                second.model,
                second.url,
                f"{second.reason} (as fallback for {member.name}: {error})",
                second.attempts,
            ) from second
