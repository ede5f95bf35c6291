"""The HierRouter graph: ingest → router ⇄ one node per pool model (L hops) → finalize.

L hops exactly, or fewer when ``RouterConfig.allow_stop`` lets the policy choose STOP (from the
second decision on): the router then goes straight to finalize.

``create_hierrouter_graph`` returns an uncompiled ``StateGraph`` (the LangGraph convention: the
caller compiles it with its own checkpointer or nests it in a parent graph); ``HierRouterGraph``
is the ready-to-use object that compiles it and loads the default policy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import answer_text, run_hop_with_fallback
from hierrouter_graph.members.build import build_pool
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.members.remote import fallback_members
from hierrouter_graph.policy.alpha import resolve_alpha, serving_alpha
from hierrouter_graph.policy.dynamic import DescriptorPolicy, load_saved_policy
from hierrouter_graph.policy.encoder import load_encoder
from hierrouter_graph.policy.protocol import STOP_ACTION, RoutingPolicy, check_routing_policy
from hierrouter_graph.policy.router import RouterPolicy
from hierrouter_graph.policy.signature import PolicyMismatchError, PolicySignature
from hierrouter_graph.route import RouteState, advance, decide_next
from hierrouter_graph.state import HopRecord, InputState, OutputState, RouterState

__all__ = [
    "HierRouterGraph",
    "InvalidQueryError",
    "build_pool",
    "create_hierrouter_graph",
    "resolve_policy",
    "routing_alpha",
]


class _ModelNode(Protocol):
    """A pool member's node, as LangGraph types a node (its state parameter named ``state``)."""

    __name__: str

    def __call__(self, state: RouterState) -> dict[str, Any]: ...


class InvalidQueryError(ValueError):
    """The graph input carries no usable query."""


def resolve_policy(
    config: RouterConfig, policy: RoutingPolicy | str | os.PathLike[str] | None
) -> RoutingPolicy:
    """A ready policy for ``config``: the given one (checked), a saved one, or the default."""
    if policy is None:
        from hierrouter_graph.defaults import default_policy

        return default_policy(config)
    if isinstance(policy, str | os.PathLike):
        encoder = load_encoder(config.encoder, config.max_seq_len, cache_dir=config.resolved_cache_dir)
        return load_saved_policy(Path(policy), config, encoder)  # dispatches on the saved "kind"
    if isinstance(policy, DescriptorPolicy):  # its pool follows the config's: members may be added
        return policy.for_config(config)
    if isinstance(policy, RouterPolicy):  # its weights fix the pool, encoder, L, STOP and inputs
        PolicySignature.from_config(config).check(PolicySignature.of(policy))
        return policy
    policy = check_routing_policy(policy)
    PolicySignature(pool=tuple(config.model_names)).check(PolicySignature(pool=tuple(policy.pool)))
    if policy.allow_stop and not config.allow_stop:
        raise PolicyMismatchError(
            "policy may STOP (allow_stop=True) but the config has allow_stop=False; set "
            "allow_stop: true in the config or use a policy that never stops"
        )
    return policy


def _query_from(state: RouterState) -> tuple[str, str]:
    messages = state.get("messages") or []
    if messages and isinstance(messages[-1], HumanMessage):
        return messages[-1].text, "messages"
    query = state.get("query")
    if query is None:
        raise InvalidQueryError(
            "input needs 'query' (a non-empty string) or 'messages' ending with a human message"
        )
    if not isinstance(query, str):
        raise InvalidQueryError(f"query: expected a non-empty string, got {type(query).__name__}")
    return query, "query"


def routing_alpha(config: RouterConfig, policy: RoutingPolicy, requested: Any = None) -> float:
    """The cost weight a query is routed for: ``requested`` (a run's or the graph's), else the α
    the policy serves (``alpha.serving_alpha``: a fixed-α policy's trained α, else the config's).

    An α-conditioned policy (an ``alpha_range``) serves any α in its range; any other was trained
    for one α only, so asking it for another raises (``alpha.resolve_alpha``) instead of silently
    routing with the trained trade-off.
    """
    return resolve_alpha(requested, serving_alpha(config.alpha, policy), policy.alpha_range)


def create_hierrouter_graph(
    config: RouterConfig,
    policy: RoutingPolicy | str | os.PathLike[str] | None = None,
    chat_models: Mapping[str, BaseChatModel | PoolMember] | None = None,
    *,
    sample: bool = False,
    seed: int | None = None,
    alpha: float | None = None,
) -> StateGraph:
    """Build (uncompiled) the L-hop routing graph for ``config``.

    Args:
        config: the pool, L, stage prompts, encoder and cost weight.
        policy: a RoutingPolicy, a folder saved by ``RouterPolicy.save`` or
            ``DescriptorPolicy.save`` (told apart by its ``kind``), or None for the default.
        chat_models: chat models or PoolMembers by name; members not given are built from their
            ModelSpec.
        sample: draw routes from π instead of argmax (a run can override with
            ``config={"configurable": {"sample": True}}``); ``seed`` seeds the draws.
        alpha: the cost weight to route for by default (an α-conditioned policy: any α in its
            ``alpha_range``; otherwise only the config's). A run can override it with
            ``config={"configurable": {"alpha": 0.02}}``; the output's ``alpha`` says which was used.
    """
    config_ = config  # the node functions below take LangGraph's run config, also named config
    pool = build_pool(config, chat_models)
    router_policy = resolve_policy(config, policy)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    horizon, allow_stop = config.horizon, config.allow_stop
    default_alpha = routing_alpha(config, router_policy, alpha)

    def ingest(state: RouterState, config: RunnableConfig) -> dict[str, Any]:
        query, source = _query_from(state)
        if not query.strip():
            raise InvalidQueryError("query: expected a non-empty string, got an empty one")
        requested = (config.get("configurable") or {}).get("alpha")
        run_alpha = default_alpha if requested is None else routing_alpha(config_, router_policy, requested)
        return {
            "query": query,
            "context": query,
            "stage": 0,
            "cost": 0.0,
            "trace": [],
            "answer": "",
            "decision": None,
            "stopped": False,
            "alpha": run_alpha,
            "input_source": source,
        }

    def router(state: RouterState, config: RunnableConfig) -> Command[str]:
        stage = state["stage"]
        if stage >= horizon:
            return Command(goto="finalize")
        draw = bool((config.get("configurable") or {}).get("sample", sample))
        trace = state["trace"]
        confidence = trace[-1].get("confidence") if trace else None  # the last reply's, in its state
        at = RouteState(
            state["query"],
            state["context"],
            stage,
            state["cost"],
            confidence=confidence,
            alpha=state.get("alpha", default_alpha),
        )
        decision = decide_next(router_policy, at, allow_stop, sample=draw, generator=generator)
        if decision.model == STOP_ACTION:  # early exit: no more model calls, nothing more charged
            return Command(goto="finalize", update={"decision": decision.as_dict(), "stopped": True})
        return Command(goto=decision.model, update={"decision": decision.as_dict()})

    fallbacks = fallback_members(config, pool)

    def model_node(member: PoolMember) -> _ModelNode:
        def hop(state: RouterState) -> dict[str, Any]:
            stage, decision = state["stage"], state.get("decision") or {}
            write = get_stream_writer()  # stream_mode="custom": who answers which hop, at what price
            write({"hierrouter": {"event": "hop_start", "stage": stage, "member": member.name}})
            result, failure = run_hop_with_fallback(
                member,
                state["context"],
                config.stage_prompt(stage),
                fallbacks.get(member.name),
                max_new_tokens=config.stage_token_cap(stage),
            )
            before = RouteState(state["query"], state["context"], stage, state["cost"])
            after = advance(before, result.model, result)
            total = after.cost
            record: HopRecord = {
                "stage": stage,
                "model": result.model,  # who answered: the fallback when the routed server failed
                "prob": float(decision.get("probs", {}).get(member.name, 1.0)),
                "probs": dict(decision.get("probs", {})),
                "value": decision.get("value"),
                "prompt": result.prompt,
                "reply": result.reply,
                "tokens_in": result.tokens_in,
                "tokens_out": result.tokens_out,
                "cost": result.cost,
                "cumulative_cost": total,
                "confidence": result.confidence.as_dict() if result.confidence is not None else None,
            }
            if failure is not None:
                record["fallback_from"], record["error"] = member.name, str(failure)
            if result.program is not None:
                record["program"] = result.program
            end = {"event": "hop_end", "stage": stage, "member": result.model, "cost": result.cost}
            write({"hierrouter": {**end, "cumulative_cost": total}})
            return {
                "context": after.context,
                "stage": after.stage,
                "cost": after.cost,
                "trace": [*state["trace"], record],
                "decision": None,
            }

        hop.__name__ = f"hop_{member.name}"
        return hop

    def finalize(state: RouterState) -> dict[str, Any]:
        trace = state["trace"]
        answer = answer_text([hop["reply"] for hop in trace])
        update: dict[str, Any] = {"answer": answer}
        if state.get("input_source") == "messages":
            update["messages"] = [
                AIMessage(
                    content=answer,
                    name="hierrouter",
                    response_metadata={"route": [h["model"] for h in trace], "cost": state["cost"]},
                )
            ]
        return update

    builder = StateGraph(RouterState, input_schema=InputState, output_schema=OutputState)
    builder.add_node("ingest", ingest)
    builder.add_node("router", router, destinations=(*pool, "finalize"))
    for name, member in pool.items():
        builder.add_node(name, model_node(member))
        builder.add_edge(name, "router")
    builder.add_node("finalize", finalize)
    builder.add_edge(START, "ingest")
    builder.add_edge("ingest", "router")
    builder.add_edge("finalize", END)
    return builder


class HierRouterGraph:
    """The router users embed: compiled graph + its policy and config.

    >>> router = HierRouterGraph()                       # the offline default pool
    >>> out = router.invoke("What is 7 * 6?")
    >>> out["answer"], [h["model"] for h in out["trace"]], out["cost"]
    """

    def __init__(
        self,
        config: RouterConfig | str | os.PathLike[str] | None = None,
        policy: RoutingPolicy | str | os.PathLike[str] | None = None,
        chat_models: Mapping[str, BaseChatModel | PoolMember] | None = None,
        *,
        checkpointer: Any = None,
        sample: bool = False,
        seed: int | None = None,
        alpha: float | None = None,
    ) -> None:
        """Args as ``create_hierrouter_graph``; ``config`` may also be a YAML/JSON path or None
        (the offline default pool), and ``checkpointer`` is handed to ``compile``."""
        if config is None:
            from hierrouter_graph.defaults import default_config

            config = default_config()
        elif not isinstance(config, RouterConfig):
            config = RouterConfig.from_file(config)
        self.config: RouterConfig = config
        self.policy: RoutingPolicy = resolve_policy(config, policy)
        self.alpha = routing_alpha(config, self.policy, alpha)
        """The cost weight runs are routed for unless one sets ``configurable.alpha``."""
        self.builder = create_hierrouter_graph(
            config, self.policy, chat_models, sample=sample, seed=seed, alpha=self.alpha
        )
        self.graph = self.builder.compile(checkpointer=checkpointer, name="hierrouter")

    @staticmethod
    def _as_input(value: str | Mapping[str, Any]) -> dict[str, Any]:
        return {"query": value} if isinstance(value, str) else dict(value)

    def invoke(
        self, input: str | Mapping[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return dict(self.graph.invoke(self._as_input(input), config, **kwargs))

    async def ainvoke(
        self, input: str | Mapping[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return dict(await self.graph.ainvoke(self._as_input(input), config, **kwargs))

    def stream(
        self, input: str | Mapping[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        return self.graph.stream(self._as_input(input), config, **kwargs)

    def pool_width(self) -> int:
        """How many hops the pool takes at once: the local micro-batched members' batch sizes plus
        the endpoint members' ``max_concurrency`` (0 when every member runs one hop at a time).

        Why: as many queries in flight as this keeps every batch full and every server's slots
        busy; fewer threads would leave them idle (``batch`` and ``hierrouter serve`` use it).
        """
        local = [s for s in self.config.models if s.endpoint is None]
        batched = [s.max_batch_size for s in local if s.kind != "cloze_mc" and s.max_batch_size > 1]
        served = [s.endpoint.max_concurrency for s in self.config.models if s.endpoint is not None]
        return sum(batched) + sum(served)

    def batch(
        self, inputs: Sequence[str | Mapping[str, Any]], config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Run many queries concurrently; hops to the same local model share one ``generate``,
        hops to an endpoint member go out side by side (up to its ``endpoint.max_concurrency``).

        Without an explicit ``max_concurrency`` LangChain runs ``min(32, cores + 4)`` threads (6 on
        2 cores), which would cap every micro-batch at 6 and keep a 32-slot server at 6 requests;
        the default here lets as many queries run as the micro-batched members can take in one
        batch and the endpoint members' servers can take at once, together.
        """
        if config is None or "max_concurrency" not in config:
            width = self.pool_width()
            if width:
                config = {**(config or {}), "max_concurrency": max(1, min(len(inputs), width))}
        return [dict(out) for out in self.graph.batch([self._as_input(i) for i in inputs], config, **kwargs)]

    def get_graph(self) -> Any:
        return self.graph.get_graph()
