"""``HierRouterMiddleware``: every model call of a LangChain agent run is a HierRouter hop.

LangChain's own ``ModelRouterMiddleware`` classifies the user's message once and lets that model
answer every call of the run. An agent run is several model calls (plan, call a tool, read its
result, answer) — the multi-hop setting HierRouter is trained for. Before each call this
middleware builds the router state s_t = (c_t, ℓ_t, C_t) from the run — c_t the conversation so far
(``conversation.conversation_context``), ℓ_t the call's index in the run, C_t the cost its earlier
calls spent — asks the policy through the library's decision path (``route.decide_next``), and
answers ``wrap_model_call`` with ``handler(request.override(model=member.chat_model))``. Tools,
structured output and streaming are the agent's own: only the model is swapped.

What lands in agent state (``HierRouterAgentState``): ``hierrouter_trace``, one record per model
call of the latest run (member, the policy's probability of it, tokens in/out, δ, C after it, α),
and ``hierrouter_cost``, the run's C. Both restart at every run (``before_agent``).

Edges, decided once here and documented in docs/agents.md:

- **Longer than the horizon**: a trained policy has a stage embedding for ℓ = 0..L−1 only; call
  ℓ ≥ L is decided at stage L−1 (the last stage's decision rule, with the real context and cost).
- **α per run**: the runtime context's ``alpha`` (``create_agent(context_schema=...)``, then
  ``agent.invoke(..., context={"alpha": 0.02})``); an α-conditioned policy serves any α in its
  range, a fixed-α policy refuses any other than the middleware's ``alpha``.
- **STOP**: an agent's model call must be answered, so a STOP policy's STOP is never taken; the
  call goes to the member the policy rates highest (its probability is recorded as is).
- **Confidence input**: an ``uncertainty_state`` policy gets none (the agent's models expose no
  token log-probs here): the neutral "unknown" features it sees before a first hop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NotRequired

import torch
from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
)
from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime
from langgraph.types import Command

from hierrouter_graph.agents.conversation import (
    call_price,
    conversation_context,
    members_for,
    requested_alpha,
    resolve_alpha,
)
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.policy.protocol import STOP_ACTION, Decision, RoutingPolicy, check_routing_policy
from hierrouter_graph.route import RouteState, decide_next

__all__ = ["AgentCallRecord", "HierRouterAgentState", "HierRouterMiddleware"]

AgentCallRecord = dict[str, Any]
"""One model call of a run: ``call``, ``stage``, ``model``, ``prob``, ``probs``, ``tokens_in``,
``tokens_out``, ``cost``, ``cumulative_cost``, ``alpha``."""


class HierRouterAgentState(AgentState):
    """The agent state with the route of the latest run."""

    hierrouter_trace: NotRequired[list[AgentCallRecord]]
    hierrouter_cost: NotRequired[float]


class HierRouterMiddleware(AgentMiddleware[HierRouterAgentState]):
    """Route every model call of a ``create_agent`` run with a trained HierRouter policy.

    >>> agent = create_agent(members["smollm2"].chat_model, tools=[...],
    ...                      middleware=[HierRouterMiddleware(policy, members)])
    >>> out = agent.invoke({"messages": [{"role": "user", "content": "..."}]})
    >>> [call["model"] for call in out["hierrouter_trace"]], out["hierrouter_cost"]

    The agent's own model is never called (every call is routed); pass any member as it.
    """

    state_schema = HierRouterAgentState

    def __init__(
        self,
        policy: RoutingPolicy,
        members: Mapping[str, PoolMember] | Sequence[PoolMember],
        *,
        alpha: float | None = None,
        horizon: int | None = None,
        sample: bool = False,
        seed: int | None = None,
    ) -> None:
        """Args:
        policy: any ``RoutingPolicy`` (a trained ``RouterPolicy``, ``FixedRoutePolicy``, ...).
        members: the chat model, price and token counter of every member the policy can choose.
        alpha: the cost weight runs are routed for unless the runtime context names one.
        horizon: the last stage index + 1 (default: the policy's ``horizon``; none: unbounded).
        sample: draw each member from π (``seed`` seeds the draws) instead of the argmax.
        """
        super().__init__()
        self.policy = check_routing_policy(policy)
        self.members = members_for(policy, members)
        self.alpha = alpha
        self.horizon = horizon if horizon is not None else self.policy.horizon
        if self.horizon is not None and self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        self.sample = sample
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    @property
    def name(self) -> str:
        return "HierRouterMiddleware"

    def before_agent(self, state: HierRouterAgentState, runtime: Runtime[Any]) -> dict[str, Any]:
        """A run starts with an empty route: its calls are stages 0, 1, ... and C starts at 0."""
        return {"hierrouter_trace": [], "hierrouter_cost": 0.0}

    async def abefore_agent(self, state: HierRouterAgentState, runtime: Runtime[Any]) -> dict[str, Any]:
        return self.before_agent(state, runtime)

    def stage_of(self, call: int) -> int:
        """The stage call ``call`` is decided at: its index, kept at L−1 past the horizon."""
        return call if self.horizon is None else min(call, self.horizon - 1)

    @staticmethod
    def _trace(request: ModelRequest[Any]) -> list[AgentCallRecord]:
        """The calls of this run so far (``before_agent`` emptied the list)."""
        state: Mapping[str, Any] = request.state
        return list(state.get("hierrouter_trace") or [])

    def decide(self, request: ModelRequest[Any]) -> tuple[Decision, RouteState, int]:
        """The policy's decision before ``request``: (decision, the state it was made in, call index)."""
        trace = self._trace(request)
        alpha = resolve_alpha(self.policy, self.alpha, requested_alpha(request.runtime.context))
        context = conversation_context(request.messages)
        cost = float(trace[-1]["cumulative_cost"]) if trace else 0.0
        at = RouteState(context, context, self.stage_of(len(trace)), cost, alpha=alpha)
        decision = decide_next(
            self.policy, at, self.policy.allow_stop,
            sample=self.sample if self.sample else None, generator=self.generator,
        )  # fmt: skip
        if decision.model == STOP_ACTION:  # a call must be answered: the best-rated member takes it
            best = max(self.policy.pool, key=lambda name: decision.probs.get(name, 0.0))
            decision = Decision(self.policy.pool.index(best), best, decision.probs, decision.value)
        return decision, at, len(trace)

    def _record(
        self,
        request: ModelRequest[Any],
        response: ModelResponse[Any],
        decision: Decision,
        at: RouteState,
        call: int,
    ) -> ExtendedModelResponse[Any]:
        reply = next((m for m in response.result if isinstance(m, AIMessage)), None)
        if reply is None:
            raise ValueError(f"{decision.model}: the model call returned no AIMessage")
        member = self.members[decision.model]
        prompt = [request.system_message, *request.messages] if request.system_message else request.messages
        tokens_in, tokens_out, cost = call_price(member, prompt, reply)
        record: AgentCallRecord = {
            "call": call,
            "stage": at.stage,
            "model": decision.model,
            "prob": decision.prob,
            "probs": dict(decision.probs),
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost": cost,
            "cumulative_cost": at.cost + cost,
            "alpha": at.alpha,
        }
        trace = [*self._trace(request), record]
        update = {"hierrouter_trace": trace, "hierrouter_cost": at.cost + cost}
        return ExtendedModelResponse(model_response=response, command=Command(update=update))

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ExtendedModelResponse[Any]:
        """Decide, answer the call with the chosen member, record the call's price."""
        decision, at, call = self.decide(request)
        response = handler(request.override(model=self.members[decision.model].chat_model))
        return self._record(request, response, decision, at, call)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ExtendedModelResponse[Any]:
        """``wrap_model_call`` for ``ainvoke``/``astream`` runs (the decision itself is CPU work)."""
        decision, at, call = self.decide(request)
        response = await handler(request.override(model=self.members[decision.model].chat_model))
        return self._record(request, response, decision, at, call)
