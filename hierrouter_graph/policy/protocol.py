"""What a router is: a ``Decision`` per state (``RoutingPolicy``), the STOP action, and the
``FixedRoutePolicy`` baseline. The learned policies live in ``policy/trained.py`` (the PPO
actor-critic) and ``policy/dynamic.py`` (over model descriptors); the state they read in
``policy/inputs.py``; the check that a policy fits a config in ``policy/signature.py``.

With ``allow_stop`` the action space gains one last action, ``STOP_ACTION`` (the paper's Appendix A
done flag): the router may end before L hops; STOP before the first hop is refused everywhere a
decision is consumed (``check_stop_allowed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from hierrouter_graph.policy.inputs import LastConfidence
from hierrouter_graph.policy.signature import PolicyMismatchError

__all__ = [
    "STOP_ACTION",
    "Decision",
    "FixedRoutePolicy",
    "PolicyTraits",
    "RoutingPolicy",
    "check_routing_policy",
    "check_stop_allowed",
    "decision_from",
]

STOP_ACTION = "<stop>"
"""The label of the STOP decision. Not a valid model name (they start with a letter or digit), so it
can never collide with a pool member."""


def check_stop_allowed(stage: int, allow_stop: bool) -> None:
    """Refuse a STOP decision the config does not allow or that comes before the first hop.

    Why a check outside the policy too: ``RouterPolicy`` masks STOP at stage 0, but the graph and
    the evaluation accept any ``RoutingPolicy``; an empty answer, or a STOP the config never asked
    for, must fail loudly wherever a decision is consumed.
    """
    if not allow_stop:
        raise PolicyMismatchError("the policy chose STOP but the config has allow_stop=False")
    if stage == 0:
        raise PolicyMismatchError("the policy chose STOP before the first hop (the answer would be empty)")


@dataclass(frozen=True)
class Decision:
    """One routing decision: the chosen model and the distribution it was drawn from."""

    index: int
    model: str
    probs: dict[str, float] = field(default_factory=dict)
    value: float | None = None

    @property
    def prob(self) -> float:
        return self.probs.get(self.model, 1.0)

    @property
    def stop(self) -> bool:
        """The router chose to end the episode here (no more hops)."""
        return self.model == STOP_ACTION

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "model": self.model, "probs": dict(self.probs), "value": self.value}


@runtime_checkable
class RoutingPolicy(Protocol):
    """What the graph's router node needs: a pool, what the policy was trained for, and a decision
    per state.

    ``allow_stop``: the policy may return ``STOP_ACTION`` (the graph refuses it unless the config
    allows STOP too). ``alpha_range``: (lo, hi) of an α-conditioned policy (α is an input; any α
    in the range is served), None for a policy trained at one α. ``trained_alpha``: that one α when
    known (a saved policy's files say), else None (the config's α is assumed). ``horizon``: the
    stages it has a decision rule for (a trained policy's L), None when any stage will do.
    ``PolicyTraits`` gives a policy written by hand the defaults of all four.
    """

    @property
    def pool(self) -> list[str]: ...

    @property
    def allow_stop(self) -> bool: ...

    @property
    def alpha_range(self) -> tuple[float, float] | None: ...

    @property
    def trained_alpha(self) -> float | None: ...

    @property
    def horizon(self) -> int | None: ...

    def decide(
        self,
        context: str,
        stage: int,
        cost: float,
        *,
        confidence: LastConfidence = None,
        alpha: float | None = None,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> Decision:
        """The decision in the route state (c_t, ℓ_t, C_t, the last reply's confidence, α).

        Every policy takes every part of the state, and reads what it was trained on: the
        confidence only with ``uncertainty_state``, α only with an ``alpha_range`` (checked inside
        it). ``sample``: draw from π (seeded by ``generator``) instead of the argmax.
        """
        ...


class PolicyTraits:
    """The defaults of ``RoutingPolicy``'s traits, for a policy written by hand: it never stops,
    was trained at one α, that α is the config's, and it decides at any stage. Override any of
    them as attributes."""

    allow_stop: bool = False
    alpha_range: tuple[float, float] | None = None
    trained_alpha: float | None = None
    horizon: int | None = None


_CONTRACT = ("pool", "allow_stop", "alpha_range", "trained_alpha", "horizon", "decide")


def check_routing_policy(policy: object) -> RoutingPolicy:
    """``policy`` when it has every member of the ``RoutingPolicy`` contract, else a ``TypeError``
    naming what it lacks — at the door (graph, middleware), not as an ``AttributeError`` mid-route."""
    if not isinstance(policy, RoutingPolicy):
        missing = [name for name in _CONTRACT if not hasattr(policy, name)]
        raise TypeError(
            f"policy: a {type(policy).__name__} is not a RoutingPolicy, it lacks {missing}; subclass "
            "hierrouter_graph.policy.protocol.PolicyTraits for the defaults of allow_stop, alpha_range and "
            "trained_alpha"
        )
    return policy


class FixedRoutePolicy(PolicyTraits):
    """Always the same route (e.g. ``["smollm2", "gemma"]``): the fixed-route baselines.

    A route shorter than L repeats its last model by default; with ``stop=True`` it STOPs after
    its last model instead (needs a config with ``allow_stop``), so it expresses routes of any
    length 1..L — the shorter routes a STOP router can take.
    """

    def __init__(self, pool: Sequence[str], route: Sequence[str], *, stop: bool = False) -> None:
        unknown = [name for name in route if name not in pool]
        if unknown:
            raise ValueError(f"route names unknown models {unknown}; the pool is {list(pool)}")
        if not route:
            raise ValueError(
                "route must name at least one model (STOP is never allowed before the first hop)"
            )
        self._pool = list(pool)
        self.route = list(route)
        self.allow_stop = stop

    @property
    def pool(self) -> list[str]:
        return list(self._pool)

    def decide(
        self,
        context: str,
        stage: int,
        cost: float,
        *,
        confidence: LastConfidence = None,
        alpha: float | None = None,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> Decision:
        """The route's model at ``stage`` (the rest of the state does not change a fixed route)."""
        if stage >= len(self.route) and self.allow_stop:
            probs = {**dict.fromkeys(self._pool, 0.0), STOP_ACTION: 1.0}
            return Decision(len(self._pool), STOP_ACTION, probs)
        name = self.route[min(stage, len(self.route) - 1)]
        probs = {n: float(n == name) for n in self._pool}
        if self.allow_stop:
            probs[STOP_ACTION] = 0.0
        return Decision(self._pool.index(name), name, probs)


def decision_from(
    logits: torch.Tensor,
    value: torch.Tensor,
    actions: Sequence[str],
    *,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> Decision:
    """The ``Decision`` of one state's [1, A] logits: argmax, or a draw from π seeded by ``generator``.

    Why one function: every policy kind must turn its logits into a route the same way.
    """
    probs = torch.softmax(logits[0].float().cpu(), dim=-1)
    if sample:
        index = int(torch.multinomial(probs, 1, generator=generator).item())
    else:
        index = int(torch.argmax(probs).item())
    return Decision(
        index,
        actions[index],
        {name: float(p) for name, p in zip(actions, probs.tolist(), strict=True)},
        float(value.item()),
    )
