"""``HierRouterDecisionModel``: a HierRouter policy as LangChain's ``BaseDecisionModel``.

Why: ``langchain.agents.middleware.ModelRouterMiddleware`` routes a run once, with a decision
model answering a ``Choice`` between named models. Handing it this class puts the trained policy
behind that convention: the state is read as the policy's first decision (c_0 = the message text,
stage 0, cost 0, the run's α), and its distribution over the pool becomes the ``ChoiceAnswer``.

The ``Choice``'s labels must be pool members (name the ``ModelChoice``s after the pool). The
policy's probabilities are renormalised over the labels asked (a question may offer a subset of the
pool; STOP is never a label); the choice is the most probable label, its confidence that
probability. One decision per run is all ``ModelRouterMiddleware`` asks; ``HierRouterMiddleware``
decides before every call.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.decisions import BaseDecisionModel, Choice, ChoiceAnswer, ClassifierResponse
from langchain_core.decisions.types import Question, State
from langchain_core.messages import BaseMessage
from pydantic import ConfigDict

from hierrouter_graph.agents.conversation import conversation_context, resolve_alpha
from hierrouter_graph.policy.protocol import RoutingPolicy, check_routing_policy
from hierrouter_graph.route import RouteState, decide_next

__all__ = ["HierRouterDecisionModel"]


def _state_text(state: State) -> str:
    """c_0 of a decision-model state: a message's or a conversation's text, a string, or JSON."""
    if isinstance(state, str):
        return state
    if isinstance(state, BaseMessage):
        return conversation_context([state])
    if isinstance(state, list | tuple) and state and all(isinstance(s, BaseMessage) for s in state):
        return conversation_context(list(state))
    return json.dumps(state, default=lambda value: getattr(value, "text", str(value)), sort_keys=True)


class HierRouterDecisionModel(BaseDecisionModel):
    """Answer ``Choice`` questions over pool members with a HierRouter policy's first decision.

    >>> router = ModelRouterMiddleware(
    ...     choices={name: ModelChoice(member.chat_model, criteria=name) for name, member in members.items()},
    ...     instructions="Pick the member HierRouter would call first.",
    ...     classifier=HierRouterDecisionModel(policy=policy),
    ... )
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    policy: Any
    """The ``RoutingPolicy`` that decides (typed ``Any``: pydantic cannot check a protocol)."""
    alpha: float | None = None
    """The cost weight to decide for (an α-conditioned policy: any in its range)."""
    model: str = "hierrouter"

    @property
    def _provider(self) -> str:
        return "hierrouter"

    def _answer(self, policy: RoutingPolicy, text: str, question_id: str, question: Question) -> ChoiceAnswer:
        if not isinstance(question, Choice):
            raise ValueError(
                f"questions[{question_id!r}]: HierRouterDecisionModel answers Choice questions only, "
                f"got a {type(question).__name__}"
            )
        labels = list(question.criteria)
        unknown = [label for label in labels if label not in policy.pool]
        if unknown:
            raise ValueError(
                f"questions[{question_id!r}].criteria: labels {unknown} are not members of the "
                f"policy's pool {policy.pool}; name the choices after the pool"
            )
        alpha = resolve_alpha(policy, self.alpha, None)
        decision = decide_next(policy, RouteState.start(text, alpha), allow_stop=False)
        mass = {label: float(decision.probs.get(label, float(label == decision.model))) for label in labels}
        total = sum(mass.values())
        probabilities = (
            {label: p / total for label, p in mass.items()}
            if total > 0
            else dict.fromkeys(labels, 1 / len(labels))
        )
        choice = max(labels, key=lambda label: probabilities[label])
        return ChoiceAnswer(
            type="choice", choice=choice, probabilities=probabilities, confidence=probabilities[choice]
        )

    def _classify(self, state: State, questions: dict[str, Question]) -> ClassifierResponse:
        """One policy decision per Choice question, on the state's text at stage 0, cost 0."""
        policy = check_routing_policy(self.policy)
        text = _state_text(state)
        answers = {qid: self._answer(policy, text, qid, question) for qid, question in questions.items()}
        return ClassifierResponse(model=self.model, answers=answers)  # type: ignore[arg-type]
