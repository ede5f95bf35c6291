"""A greedy batch drops each row as soon as it stops, and the replies do not change.

``BatchGenerator._pruned`` ends a ``generate`` round whenever a row produces a stop token, drops
that row from the batch and its KV cache, and continues the others. The tiny models here never
produce a special token (they are suppressed), so the stop ids are chosen among tokens the rows
really produce mid-reply: rows then stop at different steps, which is what pruning is for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from langchain_core.messages import HumanMessage

from hierrouter_graph.members.generation import BatchGenerator
from tests.tiny_models import special_token_ids

PROMPTS = [
    "What is seven times six?",
    "def add(a, b):",
    "Which planet is largest? A. Mars B. Jupiter",
    "The quick brown fox",
    "Describe the problem in detail.",
    "numbers 0 1 2 3",
    "Using the previous analysis, verify the plan.",
    "boxed answer solution step",
]
BUDGET = 24


def _generator(folder: Path, stop_ids: list[int], prune: bool) -> BatchGenerator:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    kwargs = {
        "max_new_tokens": BUDGET,
        "do_sample": False,
        "suppress_tokens": special_token_ids(folder),
        "eos_token_id": stop_ids,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return BatchGenerator(model, tokenizer, kwargs, max_batch=8, prune_finished=prune)


def _batch_sizes(monkeypatch: pytest.MonkeyPatch, generator: BatchGenerator) -> list[int]:
    sizes: list[int] = []
    original = generator.model.generate

    def spy(*args: Any, **kwargs: Any) -> Any:
        sizes.append(int(kwargs["input_ids"].shape[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(generator.model, "generate", spy)
    return sizes


@pytest.fixture(scope="module")
def stop_ids(tiny_folders: dict[str, Path]) -> list[int]:
    """Tokens that end some rows early: each odd row's 4th..6th-step tokens of an unstopped run."""
    free = _generator(tiny_folders["tiny-a"], stop_ids=[], prune=False)
    messages = [[HumanMessage(text)] for text in PROMPTS]
    ids = [list(free.tokenizer(free.counter.render_prompt(m))["input_ids"]) for m in messages]
    with torch.inference_mode():
        output = free.model.generate(**free.left_padded(ids), **free.generate_kwargs)
    new = output[:, max(len(row) for row in ids) :]
    return sorted({int(new[row, step]) for row in range(1, len(PROMPTS), 2) for step in (3, 5)})


def test_pruned_batches_give_the_whole_batch_replies_with_fewer_row_steps(
    tiny_folders: dict[str, Path], stop_ids: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [[HumanMessage(text)] for text in PROMPTS]
    whole = _generator(tiny_folders["tiny-a"], stop_ids, prune=False)
    pruned = _generator(tiny_folders["tiny-a"], stop_ids, prune=True)
    whole_sizes, pruned_sizes = _batch_sizes(monkeypatch, whole), _batch_sizes(monkeypatch, pruned)
    expected = whole.generate_scored(messages)
    got = pruned.generate_scored(messages)

    assert [text for text, _ in got] == [text for text, _ in expected]
    for (_, a), (_, b) in zip(got, expected, strict=True):
        assert a is not None and b is not None
        assert a.mean_logprob == pytest.approx(b.mean_logprob, abs=1e-5)
        assert a.mean_entropy == pytest.approx(b.mean_entropy, abs=1e-5)
    lengths = [len(whole.tokenizer(text)["input_ids"]) for text, _ in expected]
    assert min(lengths) < max(lengths), "rows must stop at different steps to test pruning"
    assert whole_sizes == [8]  # one generate, every row stepped to the end
    assert len(pruned_sizes) > 1 and pruned_sizes[0] == 8  # rounds ...
    assert pruned_sizes == sorted(pruned_sizes, reverse=True) and pruned_sizes[-1] < 8  # ... shrinking


def test_a_pruned_batch_streams_each_rows_text(tiny_folders: dict[str, Path], stop_ids: list[int]) -> None:
    messages = [[HumanMessage(text)] for text in PROMPTS]
    pruned = _generator(tiny_folders["tiny-a"], stop_ids, prune=True)
    pieces: dict[int, list[str]] = {row: [] for row in range(0, len(PROMPTS), 2)}
    sinks = [pieces[row].append if row in pieces else None for row in range(len(PROMPTS))]
    replies = pruned.generate_scored(messages, on_text=sinks)
    for row, streamed in pieces.items():
        assert "".join(streamed) == replies[row][0]
        assert len(streamed) > 1  # token by token, not once at the end


def test_per_prompt_budgets_hold_in_a_pruned_batch(
    tiny_folders: dict[str, Path], stop_ids: list[int]
) -> None:
    messages = [[HumanMessage(text)] for text in PROMPTS]
    pruned = _generator(tiny_folders["tiny-a"], stop_ids, prune=True)
    whole = _generator(tiny_folders["tiny-a"], stop_ids, prune=False)
    budgets = [5, 12] * 4
    got = pruned.generate_scored(messages, max_new_tokens=budgets)
    expected = whole.generate_scored(messages, max_new_tokens=budgets)
    assert [text for text, _ in got] == [text for text, _ in expected]
    unbudgeted = pruned.generate_scored(messages)
    assert [text for text, _ in got] != [text for text, _ in unbudgeted]  # the budgets bite
    for (short, _), (full, _) in zip(got, unbudgeted, strict=True):
        assert full.startswith(short)  # a budget cuts a reply, it does not change it
