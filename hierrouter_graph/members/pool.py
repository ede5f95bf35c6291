"""A pool member as the hop sees it: a chat model, its price, and how to count its tokens.

Kept apart from the factory (``members/local.py``) so users can hand the graph any LangChain chat model —
an API model, a fake in a test — without going through transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

if TYPE_CHECKING:
    from hierrouter_graph.confidence import Confidence

__all__ = [
    "CountedReply",
    "PoolMember",
    "TokenCounter",
    "TokenizerCounter",
    "messages_to_chat_dicts",
]


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens exactly as the model sees them, so δ_t is the real price of the hop."""

    def count_prompt(self, messages: Sequence[BaseMessage]) -> int:
        """Tokens of the full rendered prompt (chat template and special tokens included)."""
        ...

    def count_text(self, text: str) -> int:
        """Tokens of a reply (no special tokens added)."""
        ...

    def truncate_middle(self, text: str, max_tokens: int, marker: str) -> str:
        """``text`` cut to at most ``max_tokens`` tokens, keeping its head and its tail."""
        ...


def messages_to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages → the role/content dicts chat templates expect."""
    roles = {SystemMessage: "system", HumanMessage: "user", AIMessage: "assistant"}
    out: list[dict[str, str]] = []
    for message in messages:
        role = next((r for cls, r in roles.items() if isinstance(message, cls)), None)
        if role is None:
            raise ValueError(f"unsupported message type {type(message).__name__} in a hop prompt")
        out.append({"role": role, "content": str(message.content)})
    return out


class TokenizerCounter:
    """TokenCounter over a HuggingFace tokenizer.

    The prompt is rendered with the tokenizer's chat template and then tokenized with the
    tokenizer's defaults — the same two calls ChatHuggingFace and the text-generation pipeline
    make — so the count matches what the model actually reads.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def render_prompt(self, messages: Sequence[BaseMessage]) -> str:
        rendered = self.tokenizer.apply_chat_template(
            messages_to_chat_dicts(messages), tokenize=False, add_generation_prompt=True
        )
        return str(rendered)

    def count_prompt(self, messages: Sequence[BaseMessage]) -> int:
        return len(self.tokenizer(self.render_prompt(messages))["input_ids"])

    def count_text(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate_middle(self, text: str, max_tokens: int, marker: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text
        keep = max(max_tokens - self.count_text(marker), 2)
        head, tail = ids[: keep // 2], ids[len(ids) - (keep - keep // 2) :]
        decode = self.tokenizer.decode
        return f"{decode(head, skip_special_tokens=True)}{marker}{decode(tail, skip_special_tokens=True)}"


class CountedReply(NamedTuple):
    """A batched generation that knows its own output token count.

    Why: a program-aided member's reply is its program plus the program's output, but the model
    generated (and is paid for) only its own text, so ``hop.run_hops`` must not count the reply.
    Plain generators return ``str`` or ``(str, confidence)`` and the hop counts the reply.
    """

    text: str
    confidence: Confidence | None
    tokens_out: int


@dataclass
class PoolMember:
    """Everything the hop needs about one model of the pool.

    ``counter`` may be None for chat models that report ``usage_metadata`` (endpoints); without
    either, the hop refuses to guess a price (see ``hop.run_hop``).
    """

    name: str
    chat_model: BaseChatModel
    base_rate: float
    counter: TokenCounter | None = None
    system_prompt: str | None = None
    max_input_tokens: int | None = None
    fingerprint: str = ""
    batch_generate: Callable[[list[list[BaseMessage]]], list[str]] | None = None
    """Optional: one batched forward for many prompts (local models); same replies as invoke. A
    ``generate_scored`` method on it (``generation.BatchGenerator``) also returns each reply's confidence."""
    max_new_tokens: int | None = None
    """The member's own reply budget (``ModelSpec.max_new_tokens``); None: unknown."""
    cap_new_tokens: Callable[[int], dict[str, Any]] | None = None
    """The ``invoke`` keyword arguments that cap a reply at n new tokens, for a stage budget
    (``RouterConfig.stage_max_new_tokens``); None: the member cannot be capped per call (endpoint
    and user chat models keep their own budget)."""
    runs_programs: bool = False
    """A program-aided member (``members/program.py``): its replies hold a program run, which the
    hop reads back (``program_reply.program_trace``) for the trace and the execution price."""
    execution_cost: float = 0.0
    """Added to δ for each program the member ran (``ModelSpec.execution_cost``)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.base_rate < 0:
            raise ValueError(f"{self.name}: base_rate must be >= 0, got {self.base_rate}")
        if self.execution_cost < 0:
            raise ValueError(f"{self.name}: execution_cost must be >= 0, got {self.execution_cost}")
        if not self.fingerprint:
            self.fingerprint = f"{type(self.chat_model).__name__}:{self.name}"
