"""Batched greedy generation for a pool member: many chat prompts in one ``generate`` call.

Why a module of its own: recording an outcome tree, micro-batched serving and the specialists'
measurements all hand a member many prompts at once, and the replies must equal what the member's
text-generation pipeline gives one prompt at a time. ``BatchGenerator`` is that one batched path
(left padding done here, prompts cut into similar lengths, each reply's confidence from the same
``generate``), and ``RowStreamer`` streams each row of such a batch to its own caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .confidence import Confidence, ConfidenceRecorder, reply_lengths
from .pool import TokenizerCounter

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

__all__ = ["BatchGenerator", "RowStreamer"]


_CPU_GENERATE_LOCK = threading.Lock()


def _generate_lock(device: str) -> threading.Lock:
    """The lock a ``BatchGenerator`` holds while it generates.

    On CPU every member shares the same cores, so ONE lock for all of them: two members'
    batches generating at once (profiled: SmolLM2 and Gemma micro-batches overlapping on 2 cores)
    each ran at half speed with oversubscribed OpenMP threads, and the hops queued behind them
    were split into more, smaller batches. Taking turns gives each batch every core, and the
    requests that arrive meanwhile form a larger next batch. On an accelerator each generator
    keeps its own lock (different members' kernels may overlap there).
    """
    return _CPU_GENERATE_LOCK if device.startswith("cpu") else threading.Lock()


class BatchGenerator:
    """Greedy generation for many chat prompts in one left-padded ``generate`` call.

    Mirrors the text-generation pipeline step for step (same rendered prompt, same tokenizer
    call, same generate kwargs, new tokens decoded with special tokens skipped) so a batched reply
    equals the pipeline's reply; in float32 they are token-identical, in bf16 padding can flip a
    near-tie token.
    """

    def __init__(
        self, model: Any, tokenizer: Any, generate_kwargs: dict[str, Any], max_batch: int = 16
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.generate_kwargs = generate_kwargs
        self.max_batch = max_batch
        self.counter = TokenizerCounter(tokenizer)
        self._lock = _generate_lock(str(getattr(model, "device", "cpu")))

    def __call__(self, prompts: list[list[BaseMessage]]) -> list[str]:
        return [text for text, _ in self.generate_scored(prompts)]

    def generate_scored(
        self,
        prompts: list[list[BaseMessage]],
        on_text: Sequence[Callable[[str], None] | None] | None = None,
        max_new_tokens: Sequence[int | None] | None = None,
    ) -> list[tuple[str, Confidence | None]]:
        """Replies and, when decoding greedily, each reply's confidence from the same ``generate``.

        The confidence costs no extra forward: a logits processor reads the scores ``generate``
        already computes (see ``confidence.py``). Sampling gives None: the chosen token is no longer
        the argmax the processor sees.

        ``on_text``: per prompt, an optional callback that receives the reply's text as it is
        generated, piece by piece (the pieces concatenate to the returned reply). This is how a
        micro-batched member streams tokens (``graph.stream(..., stream_mode="messages")``) while
        sharing one batched ``generate`` with other requests.

        ``max_new_tokens``: per prompt, a reply budget instead of the member's own (a stage budget,
        ``RouterConfig.stage_max_new_tokens``); prompts of one budget share a ``generate``.
        """
        import torch
        from transformers import LogitsProcessorList

        rendered = [self.counter.render_prompt(messages) for messages in prompts]
        ids = [list(self.tokenizer(text)["input_ids"]) for text in rendered]
        out: list[tuple[str, Confidence | None]] = [("", None)] * len(rendered)
        greedy = not self.generate_kwargs.get("do_sample")
        stop_ids = self.generate_kwargs.get("eos_token_id") or []
        stop_ids = [stop_ids] if isinstance(stop_ids, int) else list(stop_ids)
        budgets = list(max_new_tokens) if max_new_tokens is not None else [None] * len(ids)
        groups: dict[int | None, list[int]] = {}
        for index, budget in enumerate(budgets):
            groups.setdefault(budget, []).append(index)
        work = [
            (budget, [members[i] for i in chunk])
            for budget, members in groups.items()
            for chunk in self._chunks([len(ids[i]) for i in members])
        ]
        with self._lock, torch.inference_mode():
            for budget, chunk in work:
                kwargs = dict(self.generate_kwargs)
                if budget is not None:
                    kwargs["max_new_tokens"] = budget
                batch = self.left_padded([ids[i] for i in chunk])
                recorder = ConfidenceRecorder()
                extra: dict[str, Any] = (
                    {"logits_processor": LogitsProcessorList([recorder])} if greedy else {}
                )
                sinks = [on_text[i] if on_text is not None else None for i in chunk]
                if any(sink is not None for sink in sinks):
                    extra["streamer"] = RowStreamer(self.tokenizer, sinks, stop_ids)
                output = self.model.generate(**batch, **kwargs, **extra)
                new_tokens = output[:, batch["input_ids"].shape[1] :]
                confidences = recorder.summarize(reply_lengths(new_tokens, stop_ids)) if greedy else None
                for row, index in enumerate(chunk):
                    text = self.tokenizer.decode(new_tokens[row], skip_special_tokens=True)
                    out[index] = (text, confidences[row] if confidences is not None else None)
        return out

    def _chunks(self, lengths: list[int]) -> list[list[int]]:
        """Prompt indices, shortest first, cut into ``generate`` calls of similar lengths.

        A chunk holds at most ``max_batch`` prompts and ends before a prompt that would make more
        than half of the chunk's (padded) prompt tokens padding: one 500-token prompt among fifteen
        of ~120 would otherwise cost 16 x 500 tokens of prefill (measured: 135 s together vs 104 s
        split, SmolLM2 fp32, 16 new tokens, busy 2 cores). Replies do not depend on the cut.
        """
        chunks: list[list[int]] = []
        current: list[int] = []
        real = 0
        for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
            length = lengths[index]
            too_padded = (len(current) + 1) * length > 2 * (real + length)
            if current and (len(current) == self.max_batch or too_padded):
                chunks.append(current)
                current, real = [], 0
            current.append(index)
            real += length
        if current:
            chunks.append(current)
        return chunks

    def left_padded(self, ids: list[list[int]]) -> dict[str, Any]:
        """Left-padded ``input_ids``/``attention_mask``, padded here rather than by the tokenizer.

        Why: a padded tokenizer call switches padding on in the shared Rust tokenizer, and hop
        threads counting tokens with the same tokenizer at that moment switch it off again
        ("Already borrowed" errors or ragged batches under micro-batching). Plain calls never touch
        that state; the ids and mask are the ones ``padding=True, padding_side="left"`` gives.
        """
        import torch

        width = max(len(row) for row in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = [[pad] * (width - len(row)) + row for row in ids]
        mask = [[0] * (width - len(row)) + [1] * len(row) for row in ids]
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long, device=self.model.device),
            "attention_mask": torch.tensor(mask, dtype=torch.long, device=self.model.device),
        }


class RowStreamer:
    """A ``generate`` streamer for a left-padded batch: each row's new text goes to its own callback.

    transformers' ``TextStreamer`` takes batch size 1 only; a micro-batch mixes streaming and
    non-streaming requests, so this one keeps one token list per row, stops a row at its first
    stop token (later steps only pad it), and emits the difference between successive decodes,
    holding back a trailing incomplete UTF-8 character ("\ufffd") until it completes. The pieces
    therefore concatenate to ``decode(new_tokens, skip_special_tokens=True)``, the batch reply.
    """

    def __init__(
        self, tokenizer: Any, sinks: Sequence[Callable[[str], None] | None], stop_ids: Sequence[int]
    ):
        self.tokenizer = tokenizer
        self.sinks = list(sinks)
        self.stop_ids = set(stop_ids)
        self.tokens: list[list[int]] = [[] for _ in self.sinks]
        self.sent = ["" for _ in self.sinks]
        self.done = [sink is None for sink in self.sinks]
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate first hands over the (padded) prompt ids
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            self.tokens[row].append(int(token))
            if token in self.stop_ids:
                self.done[row] = True
            self._emit(row, final=self.done[row])

    def end(self) -> None:
        for row, sink in enumerate(self.sinks):
            if sink is not None:
                self._emit(row, final=True)

    def _emit(self, row: int, final: bool) -> None:
        sink = self.sinks[row]
        if sink is None:
            return
        text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return
        if text.startswith(self.sent[row]) and len(text) > len(self.sent[row]):
            sink(text[len(self.sent[row]) :])
            self.sent[row] = text
