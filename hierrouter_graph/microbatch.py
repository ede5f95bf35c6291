"""Micro-batching: concurrent requests to ONE local model coalesced into one batched call.

Why: ``graph.batch(...)`` and a LangGraph server run hops in threads, so several queries reach
the same pool model at nearly the same moment. Generating them one by one leaves most of the
hardware idle; one left-padded ``generate`` over all of them costs little more than one reply
(measured 18 → 105 tok/s for SmolLM2 on 2 CPU cores, see docs/deploy.md). In float32 the batched
replies are token-identical to one-by-one replies, so nothing the router sees changes.

``MicroBatcher`` is the generic part: a queue and ONE worker thread per model. The worker takes the
oldest waiting request, waits at most ``max_wait_ms`` (counted from when that request arrived) for
more, up to ``max_batch_size``, and hands them to the batch function in one call. Every caller
holds a ``Future``; an exception from the batch function reaches every caller of that batch and
the worker goes on serving the next one. The worker starts on the first request and exits after
``idle_timeout_s`` without work, so idle pools hold no threads; ``close()`` drains and joins it.

``MicroBatchedChatModel`` puts a batcher behind the LangChain chat-model interface, so the hop
(``hop.run_hop``) stays the only hop implementation and needs no change. It streams too: a
request may carry a callback that the batched ``generate`` feeds with its row's text as it is
decoded, so ``graph.stream(..., stream_mode="messages")`` and the OpenAI-compatible server get
tokens from a member that shares its ``generate`` with other requests.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

__all__ = [
    "BatchStats",
    "GenerationRequest",
    "MicroBatchedChatModel",
    "MicroBatcher",
    "MicroBatcherClosedError",
]

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcherClosedError(RuntimeError):
    """A request was submitted after ``close()``."""


@dataclass(frozen=True)
class BatchStats:
    """Counters for benches and logs: how well requests were coalesced."""

    batches: int
    items: int
    largest_batch: int

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


@dataclass(frozen=True)
class GenerationRequest:
    """One chat prompt for a micro-batched model, and where to send its text as it is generated.

    ``on_text`` (None: not streamed) is called on the batch worker thread with successive pieces
    of the reply; it must be quick and must not raise (it runs inside the shared ``generate``).
    """

    messages: list[BaseMessage]
    on_text: Callable[[str], None] | None = None
    max_new_tokens: int | None = None
    """A reply budget for this request (a stage budget); None: the member's own."""


@dataclass
class _Job(Generic[Item, Result]):
    item: Item
    future: Future[Result]
    enqueued: float


class MicroBatcher(Generic[Item, Result]):
    """Coalesces concurrent ``submit`` calls into calls of ``batch_fn`` on lists of items.

    ``batch_fn`` must return one result per item, in order. It runs on the worker thread only, so
    it never runs twice at once for this batcher. It must not submit to the same batcher (the
    worker would wait for itself).

    ``clock`` is the time source for the wait bound (tests inject a manual clock); the idle
    timeout always uses real time.
    """

    def __init__(
        self,
        batch_fn: Callable[[list[Item]], Sequence[Result]],
        *,
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        idle_timeout_s: float = 30.0,
        name: str = "model",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.batch_fn = batch_fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.idle_timeout_s = idle_timeout_s
        self.name = name
        self._clock = clock
        self._pending: deque[_Job[Item, Result]] = deque()
        self._cv = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._batches = 0
        self._items = 0
        self._largest = 0

    # -- callers -------------------------------------------------------------------------------
    def submit(self, item: Item) -> Future[Result]:
        """Queue ``item``; the future resolves to its result (or the batch's exception)."""
        future: Future[Result] = Future()
        with self._cv:
            if self._closed:
                raise MicroBatcherClosedError(f"micro-batcher {self.name!r} is closed")
            self._pending.append(_Job(item, future, self._clock()))
            if self._worker is None:
                self._start_worker()
            self._cv.notify_all()
        return future

    def __call__(self, item: Item) -> Result:
        """Submit and wait: the blocking call a hop thread makes."""
        return self.submit(item).result()

    def stats(self) -> BatchStats:
        with self._cv:
            return BatchStats(self._batches, self._items, self._largest)

    @property
    def worker_alive(self) -> bool:
        with self._cv:
            return self._worker is not None and self._worker.is_alive()

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish the queued ones, and join the worker thread."""
        with self._cv:
            self._closed = True
            worker = self._worker
            self._cv.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def __enter__(self) -> MicroBatcher[Item, Result]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- worker --------------------------------------------------------------------------------
    def _start_worker(self) -> None:
        """Called with the lock held. Daemon: a forgotten batcher never blocks interpreter exit."""
        self._worker = threading.Thread(target=self._run, name=f"microbatch-{self.name}", daemon=True)
        self._worker.start()

    def _next_batch(self) -> list[_Job[Item, Result]] | None:
        """Block until a batch is due (full, or its oldest request waited ``max_wait_ms``)."""
        with self._cv:
            idle_until = time.monotonic() + self.idle_timeout_s
            while not self._pending and not self._closed:
                left = idle_until - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(left)
            if not self._pending:  # closed and drained
                return None
            due = self._pending[0].enqueued + self.max_wait_s
            while len(self._pending) < self.max_batch_size and not self._closed:
                left = due - self._clock()
                if left <= 0:
                    break
                self._cv.wait(left)
            size = min(len(self._pending), self.max_batch_size)
            batch = [self._pending.popleft() for _ in range(size)]
            self._batches += 1
            self._items += size
            self._largest = max(self._largest, size)
            return batch

    def _dispatch(self, batch: list[_Job[Item, Result]]) -> None:
        live = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = list(self.batch_fn([job.item for job in live]))
            if len(results) != len(live):
                raise RuntimeError(
                    f"micro-batcher {self.name!r}: batch function returned {len(results)} results "
                    f"for {len(live)} items"
                )
        except BaseException as error:  # every caller of the batch must hear about it
            for job in live:
                job.future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for job, result in zip(live, results, strict=True):
            job.future.set_result(result)

    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._dispatch(batch)
        finally:
            with self._cv:
                self._worker = None
                orphans = list(self._pending) if self._closed else []
                if orphans:  # only when the loop died unexpectedly after close
                    self._pending.clear()
                restart = bool(self._pending) and not self._closed
                if restart:  # a request slipped in as the idle worker was leaving
                    self._start_worker()
                self._cv.notify_all()
            for job in orphans:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(MicroBatcherClosedError(f"micro-batcher {self.name!r} stopped"))


class MicroBatchedChatModel(BaseChatModel):
    """A chat model whose generations go through a ``MicroBatcher`` of prompts → reply texts.

    The batch function is the member's ``BatchGenerator`` (``generate_scored``), so a lone request
    is exactly the pipeline's reply and concurrent requests share one left-padded ``generate``. No
    usage is reported: the hop counts tokens with the member's tokenizer, exactly as for the
    pipeline. A batch function returning (text, confidence) pairs puts the confidence in
    ``response_metadata["confidence"]`` (see ``confidence.py``); plain texts are accepted too.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    batcher: Any
    """A ``MicroBatcher[GenerationRequest, str | tuple[str, Confidence | None]]`` (Any: pydantic
    cannot validate the generic)."""
    model_id: str = "local"

    @property
    def _llm_type(self) -> str:
        return "hierrouter-microbatched"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_id": self.model_id}

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any], **extra: Any
    ) -> GenerationRequest:
        """The request of one call; only ``max_new_tokens`` (a stage budget) may vary per call."""
        budget = kwargs.pop("max_new_tokens", None)
        if stop or kwargs:
            raise ValueError(
                f"{self.model_id}: per-call stop/generation arguments other than max_new_tokens are "
                "not supported by the micro-batched model (one generate serves many callers); set "
                "ModelSpec.generation_kwargs, or max_batch_size: 1 to use the plain pipeline"
            )
        return GenerationRequest(list(messages), max_new_tokens=budget, **extra)

    @staticmethod
    def _unpack(result: Any) -> tuple[str, dict[str, Any]]:
        text, confidence = (result, None) if isinstance(result, str) else result
        return text, ({"confidence": confidence.as_dict()} if confidence is not None else {})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text, metadata = self._unpack(self.batcher(self._request(messages, stop, kwargs)))
        message = AIMessage(content=text, response_metadata=metadata)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Text pieces as the shared ``generate`` decodes this request's row, then the metadata.

        LangChain calls this instead of ``_generate`` when a streaming callback is attached (a
        LangGraph ``stream_mode="messages"`` run); the pieces concatenate to the reply
        ``_generate`` would return, so the hop's reply, token counts and cost do not change.
        """
        pieces: queue.SimpleQueue[str] = queue.SimpleQueue()
        future = self.batcher.submit(self._request(messages, stop, kwargs, on_text=pieces.put))
        streamed = ""

        def emit(piece: str) -> ChatGenerationChunk:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            return chunk

        while not future.done():
            try:
                piece = pieces.get(timeout=0.05)
            except queue.Empty:
                continue
            streamed += piece
            yield emit(piece)
        text, metadata = self._unpack(future.result())  # raises the batch's exception, if any
        while not pieces.empty():
            piece = pieces.get()
            streamed += piece
            yield emit(piece)
        if text != streamed:  # never expected; keeps the joined message equal to the reply
            rest = text[len(streamed) :] if text.startswith(streamed) else ""
            if rest:
                yield emit(rest)
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=metadata))
