"""Batched greedy generation for a pool member: many chat prompts in one ``generate`` call.

Why a module of its own: recording an outcome tree, micro-batched serving and the specialists'
measurements all hand a member many prompts at once, and the replies must equal what the member's
text-generation pipeline gives one prompt at a time. ``BatchGenerator`` is that one batched path
(left padding done here, prompts cut into similar lengths, each reply's confidence from the same
``generate``), and ``RowStreamer`` streams each row of such a batch to its own caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from hierrouter_graph.confidence import Confidence, ConfidenceRecorder, mean_confidence, reply_lengths
from hierrouter_graph.members.pool import TokenizerCounter

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

__all__ = ["BatchGenerator", "RowStreamer", "shared_generate_lock"]


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


def shared_generate_lock(device: str) -> threading.Lock:
    """The lock a generator on ``device`` holds while generating: one for every CPU member (any
    engine: torch and OpenVINO members take turns on the same cores), see ``_generate_lock``."""
    return _generate_lock(device)


class BatchGenerator:
    """Greedy generation for many chat prompts in one left-padded ``generate`` call.

    Mirrors the text-generation pipeline step for step (same rendered prompt, same tokenizer
    call, same generate kwargs, new tokens decoded with special tokens skipped) so a batched reply
    equals the pipeline's reply; in float32 they are token-identical, in bf16 padding can flip a
    near-tie token.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        generate_kwargs: dict[str, Any],
        max_batch: int = 16,
        prune_finished: bool = True,
    ) -> None:
        """Args:
        model: the member's ``PreTrainedModel`` (any device; CPU members share one lock).
        tokenizer: its tokenizer; the prompt is rendered with its chat template as the pipeline does.
        generate_kwargs: the member's ``generate`` kwargs (``max_new_tokens``, stop ids, sampling).
        max_batch: the most prompts in one ``generate`` call.
        prune_finished: greedy batches drop a row from the batch as soon as it stops (see
            ``_pruned``); False steps every row until the batch's last row stops.
        """
        self.model = model
        self.tokenizer = tokenizer
        self.generate_kwargs = generate_kwargs
        self.max_batch = max_batch
        self.prune_finished = prune_finished
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
                sinks = [on_text[i] if on_text is not None else None for i in chunk]
                streamer = RowStreamer(self.tokenizer, sinks, stop_ids) if any(sinks) else None
                generate = self._pruned if greedy and self.prune_finished else self._whole
                replies = generate(batch, kwargs, stop_ids, streamer)
                for index, (tokens, confidence) in zip(chunk, replies, strict=True):
                    out[index] = (self.tokenizer.decode(tokens, skip_special_tokens=True), confidence)
        return out

    def _whole(
        self, batch: dict[str, Any], kwargs: dict[str, Any], stop_ids: list[int], streamer: RowStreamer | None
    ) -> list[tuple[list[int], Confidence | None]]:
        """One ``generate`` for the whole batch: every row steps until the last row stops."""
        from transformers import LogitsProcessorList

        greedy = not kwargs.get("do_sample")
        recorder = ConfidenceRecorder()
        extra: dict[str, Any] = {"logits_processor": LogitsProcessorList([recorder])} if greedy else {}
        if streamer is not None:
            extra["streamer"] = streamer
        output = self.model.generate(**batch, **kwargs, **extra)
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        confidences = recorder.summarize(reply_lengths(new_tokens, stop_ids)) if greedy else None
        return [
            (new_tokens[row].tolist(), confidences[row] if confidences is not None else None)
            for row in range(new_tokens.shape[0])
        ]

    def _pruned(
        self, batch: dict[str, Any], kwargs: dict[str, Any], stop_ids: list[int], streamer: RowStreamer | None
    ) -> list[tuple[list[int], Confidence | None]]:
        """Greedy ``generate`` in rounds: a round ends when a row stops, and that row leaves the batch.

        Why: a batch otherwise steps every row until its LAST row stops. Measured on the Qwen pool's
        record (320-token stage budget), Qwen-1.5B replies average 210 tokens and Qwen-0.5B 137, but
        most batches hold a row that runs to the budget, so a third to a half of the decode work was
        spent on rows already done, and on a CPU a decode step costs about in proportion to its rows.
        The next round continues from the same KV cache (``Cache.batch_select_indices``), so nothing
        is prefilled twice. Greedy replies equal the unpruned batch's up to the numerics of a smaller
        batch (exactly in float32 on the tests' models; int8 dynamic activation scales depend on the
        rows, as they already do on how prompts are batched).
        """
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        budget = kwargs.get("max_new_tokens")
        if budget is None or not stop_ids:  # nothing can stop a row early: one round is the batch
            return self._whole(batch, kwargs, stop_ids, streamer)
        input_ids, mask = batch["input_ids"], batch["attention_mask"]
        rows = list(range(input_ids.shape[0]))  # batch row -> chunk row, shrinking as rows stop
        tokens: list[list[int]] = [[] for _ in rows]
        steps: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in rows]
        stop = torch.tensor(stop_ids, device=input_ids.device)
        cache, used = None, 0
        while rows and used < budget:
            recorder = ConfidenceRecorder()
            extra: dict[str, Any] = {
                "logits_processor": LogitsProcessorList([recorder]),
                "stopping_criteria": StoppingCriteriaList([_EndRoundOnStop(stop)]),
                "return_dict_in_generate": True,
            }
            if cache is not None:
                extra["past_key_values"] = cache
            if streamer is not None:
                extra["streamer"] = streamer.round(rows)
            round_kwargs = {**kwargs, "max_new_tokens": budget - used}
            output = self.model.generate(input_ids=input_ids, attention_mask=mask, **round_kwargs, **extra)
            new = output.sequences[:, input_ids.shape[1] :]
            lengths = reply_lengths(new, stop_ids)
            recorded = recorder.steps()
            done = torch.isin(new, stop).any(dim=1).tolist()
            for row, chunk_row in enumerate(rows):
                tokens[chunk_row].extend(new[row, : lengths[row]].tolist())
                if recorded is not None:
                    steps[chunk_row].append(
                        (recorded[0][row, : lengths[row]], recorded[1][row, : lengths[row]])
                    )
            used += new.shape[1]
            keep = [row for row in range(len(rows)) if not done[row]]
            if not keep:
                break
            cache = output.past_key_values
            cache.batch_select_indices(torch.tensor(keep, device=input_ids.device))
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], new.shape[1])], dim=1)[keep]
            input_ids = output.sequences[keep]
            rows = [rows[row] for row in keep]
        if streamer is not None:
            streamer.end()
        return [
            (
                row_tokens,
                mean_confidence(torch.cat([lp for lp, _ in parts]), torch.cat([en for _, en in parts]))
                if parts
                else None,
            )
            for row_tokens, parts in zip(tokens, steps, strict=True)
        ]

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


class _EndRoundOnStop:
    """A stopping criterion that ends a whole ``generate`` round at the first step a row stops.

    ``BatchGenerator._pruned`` then drops the stopped rows and continues the others from the cache.
    """

    def __init__(self, stop: Any) -> None:
        self.stop = stop

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        ended = bool(torch.isin(input_ids[:, -1], self.stop).any())
        return torch.full((input_ids.shape[0],), ended, dtype=torch.bool, device=input_ids.device)


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
        self.push(range(len(self.sinks)), value.reshape(-1).tolist())

    def round(self, rows: Sequence[int]) -> _StreamRound:
        """A streamer for one ``generate`` round whose batch rows are these rows of the whole batch."""
        return _StreamRound(self, rows)

    def push(self, rows: Iterable[int], tokens: Sequence[int]) -> None:
        """One decode step: ``tokens[i]`` is the new token of row ``rows[i]``."""
        for row, token in zip(rows, tokens, strict=True):
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


class _StreamRound:
    """``generate``'s streamer for one round of a pruned batch: maps its rows onto the whole batch's.

    Each round's ``generate`` first puts its (prompt + reply so far) ids, which are skipped, and its
    ``end`` is left to the whole batch's streamer, called once after the last round.
    """

    def __init__(self, streamer: RowStreamer, rows: Sequence[int]) -> None:
        self.streamer = streamer
        self.rows = list(rows)
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.streamer.push(self.rows, value.reshape(-1).tolist())

    def end(self) -> None:
        return None
