"""The specialists' training data: answer targets, the pool's stage-0 prompt format, examples
whose loss covers the answer tokens only, and length-bucketed batches.

Why apart from ``specialize.py``: this is what decides *what* a specialist learns (the exact hop
prompt it will be called with, the answer it is taught); the trainer beside it only decides how.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import build_hop_messages
from hierrouter_graph.members.pool import PoolMember, TokenizerCounter, messages_to_chat_dicts
from training.tasks.benchmarks import load_specialization_items
from training.tasks.items import SPECIALIZATION, Item

__all__ = [
    "DOMAINS",
    "Example",
    "PromptFormat",
    "answer_loss",
    "build_examples",
    "code_target",
    "collate",
    "domain_items",
    "encode_example",
    "epoch_batches",
    "length_bucketed_batches",
    "math_target",
    "target_for",
    "train_schedule",
]

DOMAINS: dict[str, tuple[str, ...]] = {"code": ("mbpp", "humaneval"), "math": ("gsm8k", "math")}


# ------------------------------------------------------------------------------------------- data


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        body = node.body
        first = body[0] if body else None
        is_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
        if is_docstring and isinstance(first.value.value, str):  # type: ignore[union-attr]
            node.body = body[1:] or [ast.Pass()]
    return tree


def _compact_python(source: str) -> str:
    """Reference code in one consistent style, without docstrings.

    Why: MBPP references mix CRLF, tabs and odd spacing, and HumanEval's docstrings would double
    the reply length (the prompt already shows them); both cost tokens under a 128-token budget.
    Code that does not parse is kept as written.
    """
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    try:
        return ast.unparse(_strip_docstrings(ast.parse(text)))
    except (SyntaxError, ValueError):
        return text.strip()


def code_target(item: Item) -> str:
    """The reply a code specialist should give: one fenced python block, nothing else."""
    if item.task == "humaneval":
        source = str(item.meta["code_prompt"]) + item.references[0]
    else:
        source = item.references[0]
    return f"```python\n{_compact_python(source)}\n```"


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def math_target(item: Item) -> str:
    """A worked solution ending in ``\\boxed{answer}`` (what ``math_boxed``/``gsm8k_number`` read)."""
    solution = str(item.meta["solution"]).strip()
    if item.task == "gsm8k":
        steps = _CALCULATOR.sub("", solution.rpartition("####")[0]).strip()
        return f"{steps}\nThe final answer is \\boxed{{{item.references[0]}}}."
    return solution


def target_for(item: Item) -> str:
    if item.task in DOMAINS["code"]:
        return code_target(item)
    if item.task in DOMAINS["math"]:
        return math_target(item)
    raise ValueError(f"{item.id}: no specialist target for task {item.task!r}")


def domain_items(domain: str) -> list[Item]:
    """Every specialization-half item of the domain's tasks (never a routing item)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {sorted(DOMAINS)}")
    items = [it for task in DOMAINS[domain] for it in load_specialization_items(task)]
    leaked = [it.id for it in items if it.half != SPECIALIZATION]
    if leaked:  # defence in depth: load_specialization_items already filters on the half
        raise AssertionError(f"routing items in the specialization data: {leaked[:5]}")
    return items


@dataclass(frozen=True)
class PromptFormat:
    """The stage-0 hop prompt of one pool member, rendered exactly as ``hop.run_hop`` renders it."""

    member: PoolMember
    instruction: str

    @classmethod
    def for_pool(cls, member: PoolMember, config: RouterConfig, stage: int = 0) -> PromptFormat:
        return cls(member=member, instruction=config.stage_prompt(stage))

    def chat(self, query: str) -> list[dict[str, str]]:
        """The hop's messages as role/content dicts (what the chat template receives)."""
        return messages_to_chat_dicts(build_hop_messages(self.member, self.instruction, query))

    def render(self, query: str) -> str:
        counter = self.member.counter
        if not isinstance(counter, TokenizerCounter):
            raise TypeError(f"{self.member.name}: a specialist needs a member with a tokenizer counter")
        return counter.render_prompt(build_hop_messages(self.member, self.instruction, query))


@dataclass(frozen=True)
class Example:
    """One tokenized training example: the prompt's tokens, then the answer's."""

    id: str
    task: str
    input_ids: tuple[int, ...]
    n_prompt: int

    @property
    def labels(self) -> list[int]:
        """-100 on the prompt (no loss there), the token itself on the answer."""
        return [-100] * self.n_prompt + list(self.input_ids[self.n_prompt :])

    @property
    def n_answer(self) -> int:
        return len(self.input_ids) - self.n_prompt


def _completion_text(tokenizer: Any, chat: list[dict[str, str]], prompt: str, answer: str) -> str:
    """``answer`` plus the template's turn terminator (``<|im_end|>`` for ChatML).

    Taken from the template itself (the full conversation minus the rendered prompt) so any chat
    format works; trailing whitespace after the terminator is not trained on.
    """
    full = str(
        tokenizer.apply_chat_template(
            [*chat, {"role": "assistant", "content": answer}], tokenize=False, add_generation_prompt=False
        )
    )
    if full.startswith(prompt) and answer in full[len(prompt) :]:
        return full[len(prompt) :].rstrip()
    return answer + str(tokenizer.eos_token or "")


def encode_example(
    tokenizer: Any, fmt: PromptFormat, item_id: str, task: str, query: str, answer: str
) -> Example:
    """Prompt and answer tokenized SEPARATELY: the prompt exactly as the model sees it at inference."""
    prompt = fmt.render(query)
    completion = _completion_text(tokenizer, fmt.chat(query), prompt, answer)
    prompt_ids = [int(i) for i in tokenizer(prompt)["input_ids"]]
    answer_ids = [int(i) for i in tokenizer(completion, add_special_tokens=False)["input_ids"]]
    if not answer_ids:
        raise ValueError(f"{item_id}: empty answer")
    return Example(item_id, task, tuple(prompt_ids + answer_ids), len(prompt_ids))


def build_examples(
    tokenizer: Any,
    fmt: PromptFormat,
    items: Sequence[Item],
    max_answer_tokens: int,
    target: Callable[[Item], str] = target_for,
) -> tuple[list[Example], dict[str, dict[str, int]]]:
    """Examples in item order, and per task counts: available, used, dropped (answer too long)."""
    examples: list[Example] = []
    counts: dict[str, dict[str, int]] = {}
    for item in items:
        row = counts.setdefault(item.task, {"available": 0, "used": 0, "dropped_too_long": 0})
        row["available"] += 1
        example = encode_example(tokenizer, fmt, item.id, item.task, item.prompt, target(item))
        if example.n_answer > max_answer_tokens:
            row["dropped_too_long"] += 1
            continue
        row["used"] += 1
        examples.append(example)
    return examples, counts


# ---------------------------------------------------------------------------------------- batches


def length_bucketed_batches(lengths: Sequence[int], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped so each batch holds similar lengths and ``rows × longest ≤ batch_tokens``.

    Ties are broken at random (shuffle, then a stable sort), and the batch order is shuffled, so
    epochs differ while padding stays minimal. A single example longer than the budget gets a
    batch of its own. The number of batches depends only on the lengths, not on ``rng``.
    """
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order.sort(key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        grown = max(longest, lengths[index])
        if current and grown * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, grown = [], lengths[index]
        current.append(index)
        longest = grown
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def epoch_batches(lengths: Sequence[int], batch_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    return length_bucketed_batches(lengths, batch_tokens, random.Random(f"{seed}:epoch:{epoch}"))


def train_schedule(lengths: Sequence[int], batch_tokens: int, seed: int, steps: int) -> list[list[int]]:
    """The first ``steps`` batches of the epoch sequence: a pure function of its arguments, so a
    resumed run sees exactly the batches the killed run would have seen."""
    out: list[list[int]] = []
    epoch = 0
    while len(out) < steps:
        out.extend(epoch_batches(lengths, batch_tokens, seed, epoch))
        epoch += 1
    return out[:steps]


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors; padding is masked out of attention and labels.

    The pad id may equal the turn terminator (SmolLM2: ``<|im_end|>``), so labels are built from
    the example lengths, never by comparing ids with ``pad_id``.
    """
    width = max(len(ex.input_ids) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :n] = torch.tensor(ex.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def answer_loss(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens, projecting only answer positions onto the vocabulary.

    Why: about 70% of the tokens are prompt; running the LM head (49k outputs for SmolLM2) on them
    costs ~15% of the compute and most of the activation memory for labels that are -100 anyway.
    Same value as the model's own ``loss`` (shifted labels, mean over labelled tokens, fp32). Falls
    back to that ``loss`` for models that do more than ``lm_head(hidden)`` (Gemma's soft-capping)
    or do not expose ``.model`` / ``.lm_head``.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body, head = getattr(base, "model", None), getattr(base, "lm_head", None)
    if body is None or head is None or getattr(base.config, "final_logit_softcapping", None) is not None:
        return model(**batch).loss
    hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])
