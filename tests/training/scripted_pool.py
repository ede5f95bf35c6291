"""A scripted three-member pool whose best route is known, shared by the training tests.

``planner`` writes a plan, ``solver`` adds the two numbers of "What is a plus b?" once a plan is in
its prompt (else says 0), ``guesser`` says 13: the only right route is planner → solver.
"""

from __future__ import annotations

import re
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from hierrouter_graph import ModelSpec, RouterConfig
from training.tasks.items import Item

__all__ = [
    "BEST_ROUTE",
    "PLAN",
    "POOL",
    "RATES",
    "ScriptedChat",
    "chat_models",
    "lucky_items",
    "make_items",
    "reply",
    "scripted_config",
]

POOL = ("planner", "solver", "guesser")
BEST_ROUTE = ["planner", "solver"]
RATES = {"planner": 0.001, "solver": 0.002, "guesser": 0.001}
PLAN = "Plan: restate the question, then add the two terms carefully."
_SUM = re.compile(r"What is (\d+) plus (\d+)\?")


def reply(role: str, prompt: str, solves_after_answer: bool = False) -> str:
    """What pool member ``role`` answers to ``prompt`` (the stage instruction + context).

    ``solves_after_answer``: the solver also adds once an earlier reply gave an answer.
    """
    if role == "planner":
        return PLAN
    if role == "solver":
        match = _SUM.search(prompt)
        ready = "Plan:" in prompt or (solves_after_answer and "The answer is" in prompt)
        total = int(match.group(1)) + int(match.group(2)) if match and ready else 0
        return f"The answer is {total}."
    return "The answer is 13."


class ScriptedChat(FakeListChatModel):
    """Deterministic reply that depends on the prompt, with token usage like an endpoint's."""

    role: str
    solves_after_answer: bool = False
    """The solver also adds once an earlier reply gave an answer (``reply``)."""

    def answer(self, prompt: str) -> str:
        """The reply to ``prompt``; a test whose pool behaves otherwise overrides this."""
        return reply(self.role, prompt, self.solves_after_answer)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt = str(messages[-1].content)
        text = self.answer(prompt)
        tokens_in, tokens_out = len(prompt.split()), len(text.split())
        usage = {
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        }
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text, usage_metadata=usage))])


def chat_models(solves_after_answer: bool = False) -> dict[str, ScriptedChat]:
    return {
        name: ScriptedChat(responses=["unused"], role=name, solves_after_answer=solves_after_answer)
        for name in POOL
    }


def scripted_config(horizon: int = 2) -> RouterConfig:
    return RouterConfig(
        models=[ModelSpec(name=name, source=f"fake:{name}", base_rate=RATES[name]) for name in POOL],
        horizon=horizon,
    )


def make_items(n: int, offset: int = 0) -> list[Item]:
    """Sums that are never 0 or 13, so no wrong route scores by luck."""
    items = []
    for i in range(offset, offset + n):
        a, b = 3 + 2 * i, 20 + 3 * i
        items.append(
            Item(
                id=f"sum/{i}",
                task="sum",
                prompt=f"Question {i}: What is {a} plus {b}?",
                references=[str(a + b)],
                metric="gsm8k_number",
                half="routing",
            )
        )
    return items


def lucky_items(n: int, offset: int = 0) -> list[Item]:
    """Questions only the guesser's 13 answers: the best route differs by task."""
    prompt = "Lucky question {}: which number am I thinking of?"
    return [
        Item(f"lucky/{i}", "lucky", prompt.format(i), ["13"], "gsm8k_number", "routing")
        for i in range(offset, offset + n)
    ]
