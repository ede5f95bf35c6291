"""Program-aided members (``ModelSpec(kind="program")``): ANY chat model writes a Python program,
the sandbox runs it, and the member's reply is the program plus its real output.

Why a wrapper around the member's chat model and batch generator, not a new kind of hop: the
hop (``hop.py``), the graph, the training environment, the tree walker, the recorder, the replay
member and the server all see an ordinary ``PoolMember`` whose chat model happens to answer with
a program run. The generation itself is unchanged — micro-batched, OpenVINO, an endpoint or a
user's ``BaseChatModel`` — and only after it does the member run the program it wrote.

- The prompt: ``DEFAULT_PROGRAM_SYSTEM_PROMPT`` unless the spec sets ``system_prompt``.
- The run: ``sandbox.run_python`` with the spec's ``program_timeout_s`` / ``program_memory_mb``;
  at most ``program_workers`` programs of one member run at once (batched hops generate together,
  then run their programs that many at a time). Without OS isolation the sandbox refuses
  (``SandboxUnavailable``) and so does the member; docs/security.md says what is guaranteed.
- The reply: ``program_reply.compose_reply`` (failures included, so a later hop can repair them);
  a reply without a program is kept as the model wrote it and nothing runs.
- The price: tokens × rate on the model's OWN tokens (what it generated, not the output the
  sandbox added), plus ``execution_cost`` per run (added by the hop, read off the reply, so a
  replayed hop costs exactly what the recorded one did).
- The confidence: the generation's, as for any member.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict

from hierrouter_graph.members.pool import CountedReply, PoolMember, TokenCounter
from hierrouter_graph.members.program_reply import (
    DEFAULT_PROGRAM_SYSTEM_PROMPT,
    compose_reply,
    extract_program,
)
from hierrouter_graph.model_spec import ModelSpec
from hierrouter_graph.sandbox import SandboxLimits, SandboxResult, SandboxUnavailable, run_python

__all__ = [
    "ProgramAidedChatModel",
    "ProgramBatchGenerator",
    "ProgramRunner",
    "ProgramSettings",
    "for_spec",
    "program_aided",
]


@dataclass(frozen=True)
class ProgramSettings:
    """How a program member runs its programs (the spec's program fields)."""

    timeout_s: float = 5.0
    memory_mb: int = 1024
    output_chars: int = 1000
    workers: int = 2

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ProgramSettings:
        return cls(
            spec.program_timeout_s, spec.program_memory_mb, spec.program_output_chars, spec.program_workers
        )


class ProgramRunner:
    """Runs a member's programs in the sandbox, ``workers`` at a time, and counts the runs.

    Shared by the member's chat model (one program per call, from many graph threads) and its
    batch generator (a level of the outcome tree), so both obey one concurrency bound.
    """

    def __init__(
        self,
        member: str,
        settings: ProgramSettings,
        run: Callable[..., SandboxResult] = run_python,
    ) -> None:
        self.member, self.settings, self._run = member, settings, run
        self._slots = threading.BoundedSemaphore(settings.workers)
        self._lock = threading.Lock()
        self.runs = 0
        """Programs run so far (benches and tests: a replayed hop runs nothing)."""

    def limits(self) -> SandboxLimits:
        return SandboxLimits(
            timeout_s=self.settings.timeout_s,
            memory_bytes=self.settings.memory_mb << 20,
            max_output_chars=self.settings.output_chars + 1,  # one more: the reply notes a cut
        )

    def run(self, code: str) -> SandboxResult:
        with self._slots:
            with self._lock:
                self.runs += 1
            try:
                return self._run(code, limits=self.limits())
            except SandboxUnavailable as error:
                raise SandboxUnavailable(
                    f"{self.member}: a program-aided member runs its programs in the sandbox, which "
                    f"is unavailable here: {error}"
                ) from error

    def reply(self, generated: str) -> str:
        """The member's reply for the model's text: the composed program run, or the text itself
        when it holds no program."""
        code = extract_program(generated)
        if code is None:
            return generated
        settings = self.settings
        return compose_reply(
            code,
            self.run(code),
            timeout_s=settings.timeout_s,
            memory_mb=settings.memory_mb,
            output_chars=settings.output_chars,
        )

    def replies(self, generated: Sequence[str]) -> list[str]:
        """``reply`` for many texts, ``workers`` programs at a time, in order."""
        if len(generated) <= 1:
            return [self.reply(text) for text in generated]
        with ThreadPoolExecutor(max_workers=self.settings.workers) as pool:
            return list(pool.map(self.reply, generated))


class ProgramAidedChatModel(BaseChatModel):
    """A chat model whose reply is the program its inner model wrote, plus the program's output.

    Usage: the inner model's own report when it sends one (endpoints), else counted with the
    member's tokenizer on the inner model's text — the tokens the model generated; without
    either it reports none and the hop refuses to guess, as for any member. The inner call runs
    without callbacks, so a streaming run shows this model's reply once, not the raw program.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseChatModel
    runner: Any
    """The member's ``ProgramRunner`` (Any: pydantic does not validate it)."""
    counter: Any = None
    """The member's ``TokenCounter``, or None."""
    model_id: str = "program"

    @property
    def _llm_type(self) -> str:
        return "hierrouter-program"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "inner": self.inner._llm_type}

    def _usage(self, messages: list[BaseMessage], message: AIMessage, text: str) -> dict[str, int] | None:
        reported = message.usage_metadata
        if reported:
            tokens_in, tokens_out = int(reported["input_tokens"]), int(reported["output_tokens"])
        elif self.counter is not None:
            tokens_in, tokens_out = self.counter.count_prompt(messages), self.counter.count_text(text)
        else:
            return None
        total = tokens_in + tokens_out
        return {"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": total}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if stop is not None:
            kwargs["stop"] = stop
        message = self.inner.invoke(messages, config={"callbacks": []}, **kwargs)
        generated = message.text if isinstance(message, AIMessage) else str(message.content)
        usage = self._usage(messages, message, generated) if isinstance(message, AIMessage) else None
        reply = AIMessage(
            content=self.runner.reply(generated),
            response_metadata=dict(message.response_metadata),
            usage_metadata=usage,
        )
        return ChatResult(generations=[ChatGeneration(message=reply)])


class ProgramBatchGenerator:
    """The member's batch generator: the inner one generates every prompt in one batch, then the
    programs run ``workers`` at a time; each reply comes back with the tokens the model generated
    (``pool.CountedReply``). Other attributes are the inner generator's."""

    def __init__(self, inner: Any, runner: ProgramRunner, counter: TokenCounter) -> None:
        self.inner, self.runner, self.counter = inner, runner, counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, prompts: list[list[BaseMessage]]) -> list[str]:
        return [reply.text for reply in self.generate_scored(prompts)]

    def generate_scored(
        self,
        prompts: list[list[BaseMessage]],
        on_text: Sequence[Callable[[str], None] | None] | None = None,
        max_new_tokens: Sequence[int | None] | None = None,
    ) -> list[CountedReply]:
        scored = getattr(self.inner, "generate_scored", None)
        if scored is not None:
            generated = scored(prompts, on_text=on_text, max_new_tokens=max_new_tokens)
        elif on_text is None and max_new_tokens is None:
            generated = self.inner(prompts)
        else:
            raise TypeError(f"{self.runner.member}: the inner batch generator has no generate_scored")
        pairs = [(item, None) if isinstance(item, str) else (item[0], item[1]) for item in generated]
        replies = self.runner.replies([text for text, _ in pairs])
        return [
            CountedReply(reply, confidence, self.counter.count_text(text))
            for reply, (text, confidence) in zip(replies, pairs, strict=True)
        ]


def program_aided(member: PoolMember, spec: ModelSpec, runner: ProgramRunner | None = None) -> PoolMember:
    """``member`` as ``spec``'s program-aided member: same model, price, counter and fingerprint;
    its chat model and batch generator run the programs they write. ``runner``: a custom one
    (tests count runs with it); default: the sandbox with ``spec``'s settings."""
    if member.runs_programs:
        return member
    runner = runner or ProgramRunner(spec.name, ProgramSettings.from_spec(spec))
    chat = ProgramAidedChatModel(
        inner=member.chat_model, runner=runner, counter=member.counter, model_id=spec.name
    )
    batch = member.batch_generate
    wrapped = ProgramBatchGenerator(batch, runner, member.counter) if batch and member.counter else None
    return dataclasses.replace(
        member,
        chat_model=chat,
        batch_generate=wrapped,
        system_prompt=member.system_prompt or spec.system_prompt or DEFAULT_PROGRAM_SYSTEM_PROMPT,
        runs_programs=True,
        execution_cost=spec.execution_cost,
    )


def for_spec(member: PoolMember, spec: ModelSpec) -> PoolMember:
    """``member`` as its spec says: program-aided for ``kind: program``, else unchanged (the one
    call every member factory makes: loaded, replay-only, endpoint and user-supplied)."""
    return program_aided(member, spec) if spec.kind == "program" else member
