"""The route step: the state a router decides in, and what one hop does to it.

Why a module of its own: the graph's router and model nodes, the training environment, the
outcome-tree walker (recording, replay, evaluation) and the evaluator's greedy router all move
through the same states — c_{t+1} = c_t ‖ r_t, ℓ_{t+1} = ℓ_t + 1, C_{t+1} = C_t + δ_t, the last
reply's confidence carried to the next decision, STOP checked where a decision is consumed. Writing
that step once (``advance``, ``decide_next``) keeps them from drifting apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hierrouter_graph.hop import HopResult, answer_text, extend_context
from hierrouter_graph.policy.inputs import LastConfidence
from hierrouter_graph.policy.protocol import STOP_ACTION, Decision, RoutingPolicy, check_stop_allowed

__all__ = ["Route", "RouteState", "advance", "decide_next"]

Route = tuple[str, ...]
"""The models called so far, in order."""


@dataclass(frozen=True)
class RouteState:
    """(c_t, ℓ_t, C_t) of one query, with the route taken and the last reply's confidence."""

    query: str
    context: str
    stage: int = 0
    cost: float = 0.0
    route: Route = ()
    confidence: LastConfidence = None
    """The last reply's confidence (None before the first hop): an uncertainty router reads it."""
    alpha: float | None = None
    """The cost weight this query is routed for: an α-conditioned router reads it (None: the
    policy's own, fixed at training time)."""
    replies: tuple[str, ...] = ()
    """Each hop's reply, in order (the context holds them too, but joined: a reply may itself
    contain the separator, so the answer is taken from here)."""

    @property
    def answer(self) -> str:
        """What the route answers so far: ``hop.answer_text`` of its replies (the last that did
        not decline) — the text the graph returns and Q scores."""
        return answer_text(self.replies)

    @classmethod
    def start(cls, query: str, alpha: float | None = None) -> RouteState:
        """c_0 = the query, ℓ = 0, C = 0."""
        return cls(query, query, alpha=alpha)


def advance(state: RouteState, model: str, hop: HopResult) -> RouteState:
    """The state after ``model`` answered ``hop``: the reply appended, one more stage, δ added."""
    return RouteState(
        query=state.query,
        context=extend_context(state.context, hop.reply),
        stage=state.stage + 1,
        cost=state.cost + hop.cost,
        route=(*state.route, model),
        confidence=hop.confidence,
        alpha=state.alpha,
        replies=(*state.replies, hop.reply),
    )


def decide_next(
    policy: RoutingPolicy,
    state: RouteState,
    allow_stop: bool,
    *,
    sample: bool | None = None,
    generator: torch.Generator | None = None,
) -> Decision:
    """The policy's decision in ``state``; a STOP the config does not allow (or at stage 0) raises.

    The whole route state goes to the policy (``RoutingPolicy.decide``'s contract): each policy
    reads the parts it was trained on (the confidence with ``uncertainty_state``, α with an
    ``alpha_range``). ``sample=None``: the greedy default.
    """
    decision = policy.decide(
        state.context,
        state.stage,
        state.cost,
        confidence=state.confidence,
        alpha=state.alpha,
        sample=bool(sample),
        generator=generator,
    )
    if decision.model == STOP_ACTION:
        check_stop_allowed(state.stage, allow_stop)
    return decision
