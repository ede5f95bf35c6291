"""What an agent's model call looks like to the router: the state text, the price, the α.

Why a module of its own: the middleware (a decision before every model call) and the decision model
(one decision per run, inside LangChain's ``ModelRouterMiddleware``) read a LangChain conversation
into the same router state — the context c_t as the graph builds it (``hop.extend_context`` over
the conversation's turns), the cost by ``cost.hop_cost``, α checked as the graph checks it — so a
policy decides on an agent's turn exactly as on a graph hop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage

from hierrouter_graph.cost import hop_cost
from hierrouter_graph.hop import extend_context
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.policy.alpha import resolve_alpha as resolve
from hierrouter_graph.policy.protocol import RoutingPolicy

__all__ = ["call_price", "conversation_context", "members_for", "message_text", "resolve_alpha"]


def message_text(message: BaseMessage) -> str:
    """A turn as text: its text, or — for an assistant turn that only calls tools — the calls as
    JSON (what the next model reads is the call and then the tool's result)."""
    text = message.text
    if not text and isinstance(message, AIMessage) and message.tool_calls:
        calls = [{"name": call["name"], "args": call["args"]} for call in message.tool_calls]
        return json.dumps(calls, sort_keys=True)
    return text


def conversation_context(messages: Sequence[BaseMessage]) -> str:
    """c_t of a conversation: its first turn ‖ every later turn (``hop.extend_context``), system
    messages left out (they are the app's, the same on every call)."""
    turns = [message_text(m) for m in messages if not isinstance(m, SystemMessage)]
    if not turns:
        raise ValueError("messages: the conversation has no turn to route on (only system messages)")
    context = turns[0]
    for turn in turns[1:]:
        context = extend_context(context, turn)
    return context


def members_for(
    policy: RoutingPolicy, members: Mapping[str, PoolMember] | Sequence[PoolMember]
) -> dict[str, PoolMember]:
    """``members`` by name, checked to hold every member the policy can choose (a KeyError names
    the missing ones)."""
    by_name = dict(members) if isinstance(members, Mapping) else {m.name: m for m in members}
    for name, member in by_name.items():
        if member.name != name:
            raise ValueError(f"members[{name!r}] is the PoolMember named {member.name!r}")
    missing = [name for name in policy.pool if name not in by_name]
    if missing:
        raise KeyError(f"members: the policy's pool {policy.pool} names {missing}, which members lacks")
    return by_name


def resolve_alpha(policy: RoutingPolicy, default: float | None, requested: Any) -> float | None:
    """The α a run is routed for: the runtime context's ``alpha`` (a mapping key or an attribute),
    else ``default`` (the middleware's, else the α the policy was trained for). The rule is the
    graph's (``alpha.resolve_alpha``): an α-conditioned policy serves any α in its ``alpha_range``,
    a policy trained at one α refuses any other."""
    if default is None and policy.alpha_range is None:
        default = policy.trained_alpha
    return resolve(requested, default, policy.alpha_range, field="context.alpha")


def requested_alpha(context: Any) -> Any:
    """``alpha`` of a runtime context: a mapping key, an attribute, or None."""
    if context is None:
        return None
    if isinstance(context, Mapping):
        return context.get("alpha")
    return getattr(context, "alpha", None)


def call_price(member: PoolMember, prompt: Sequence[BaseMessage], reply: AIMessage) -> tuple[int, int, float]:
    """(tokens_in, tokens_out, δ) of one model call: the reply's ``usage_metadata`` when the model
    reports it, else the member's tokenizer over the prompt it was sent and its reply. Without
    either, it refuses to guess a price (as ``hop.run_hop``)."""
    usage = reply.usage_metadata
    if usage:
        tokens_in, tokens_out = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    elif member.counter is None:
        raise ValueError(
            f"{member.name}: the chat model reported no usage_metadata and no tokenizer was given; "
            "pass PoolMember(counter=TokenizerCounter(tokenizer)) to price its calls"
        )
    else:
        try:
            tokens_in = member.counter.count_prompt(list(prompt))
        except ValueError as error:
            raise ValueError(
                f"{member.name}: its token counter cannot price this call ({error}); a member used "
                "with tools must report usage_metadata"
            ) from None
        tokens_out = member.counter.count_text(message_text(reply))
    return tokens_in, tokens_out, hop_cost(member.base_rate, tokens_in, tokens_out)
