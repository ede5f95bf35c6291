"""Graph state: plain JSON values (plus LangChain messages) so every checkpointer can store it."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

__all__ = ["HopRecord", "InputState", "OutputState", "ProgramTrace", "RouterState"]


class ProgramTrace(TypedDict):
    """What a program-aided member's hop ran (``program_reply.program_trace``)."""

    code: str
    output: str
    """The tail of what the program printed (stdout)."""
    status: str
    """The sandbox's reason (ok, error, incomplete, timeout, memory, killed), or no_program when
    the reply held no program (then nothing ran and no execution was charged)."""
    returncode: int | None
    error: str
    """The tail of stderr (the traceback) when the run failed, else ""."""


class HopRecord(TypedDict):
    """One hop of the trace: who answered which stage, at what price, chosen how confidently."""

    stage: int
    model: str
    prob: float
    probs: dict[str, float]
    value: float | None
    prompt: str
    reply: str
    tokens_in: int
    tokens_out: int
    cost: float
    cumulative_cost: float
    confidence: dict[str, float] | None
    """The reply's mean token log-prob and entropy from its own generation; None when the model
    exposes no log-probs (``confidence.py``). The router's uncertainty input when enabled."""
    fallback_from: NotRequired[str]
    """Only on a fallback hop: the routed endpoint member whose server failed (``model`` answered)."""
    error: NotRequired[str]
    """Only on a fallback hop: the RemoteModelError message (member, URL, attempts, reason)."""
    program: NotRequired[ProgramTrace]
    """Only on a program-aided member's hop: the program, its output and exit status."""


class InputState(TypedDict, total=False):
    """Either ``{"query": str}`` or ``{"messages": [...]}`` (MessagesState-compatible)."""

    query: str
    messages: Annotated[list[AnyMessage], add_messages]


class OutputState(TypedDict, total=False):
    query: str
    answer: str
    context: str
    cost: float
    trace: list[HopRecord]
    stopped: bool
    """True when the router chose STOP before L hops (``RouterConfig.allow_stop``)."""
    alpha: float
    """The cost weight the query was routed for (``RouterConfig.alpha`` unless the run set one)."""
    messages: Annotated[list[AnyMessage], add_messages]


class RouterState(TypedDict):
    """s_t = (context c_t, stage ℓ_t, cost C_t), plus the query, answer and trace around it."""

    messages: NotRequired[Annotated[list[AnyMessage], add_messages]]
    query: NotRequired[str]
    context: NotRequired[str]
    stage: NotRequired[int]
    cost: NotRequired[float]
    answer: NotRequired[str]
    trace: NotRequired[list[HopRecord]]
    decision: NotRequired[dict[str, Any] | None]
    stopped: NotRequired[bool]
    alpha: NotRequired[float]
    input_source: NotRequired[Literal["query", "messages"]]
