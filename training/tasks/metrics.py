"""Quality Q of a reply: the one place where answers are extracted and compared with golds.

Why one module: the PPO reward, the evaluation tables and the specialization filters must agree
on what "correct" means, so nothing else may re-implement answer extraction.

Two families of scores, both in [0, 1]:

- ``token_f1``: the paper's metric (SQuAD-style token F1, max over references).
- the task metric named by ``item.metric``: ``mc_letter``, ``gsm8k_number``, ``math_boxed``,
  ``mbpp_pass``, ``humaneval_pass`` (``token_f1`` is also accepted as an item metric).


Extracting the answer a reply states (its option letter, number, MATH expression or code) is
``training/tasks/answers.py``'s job; this module compares it with the gold. MBPP and HumanEval are
judged by ``training/tasks/code_tests.py``: the code (then MBPP's ``test_setup_code``, which uses classes
the solution defines) runs in the sandbox, the tests' inputs come back as plain data and the
comparison with the expected values happens outside the candidate's process.
"""

from __future__ import annotations

import ast
import functools
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal, Protocol, TypedDict

from training.tasks.answers import (
    MC_LETTERS,
    extract_choice,
    extract_code,
    extract_math_answer,
    extract_number,
    math_equal,
    numbers_equal,
)
from training.tasks.code_tests import passes_tests, split_humaneval_check

__all__ = [
    "TASK_METRICS",
    "QualityReport",
    "RewardMetric",
    "ScorableItem",
    "evaluate_reply",
    "normalize_text",
    "score",
    "token_f1",
]

RewardMetric = Literal["task", "f1"]

TASK_METRICS: tuple[str, ...] = (
    "mc_letter",
    "gsm8k_number",
    "math_boxed",
    "mbpp_pass",
    "humaneval_pass",
    "token_f1",
)


class ScorableItem(Protocol):
    """What scoring needs from an item; ``training.tasks.items.Item`` satisfies it."""

    @property
    def references(self) -> list[str]: ...

    @property
    def metric(self) -> str: ...

    @property
    def meta(self) -> dict[str, Any]: ...


class QualityReport(TypedDict):
    task_metric: float
    f1: float


# --------------------------------------------------------------------------------------------
# Token F1 (the paper's Q)
# --------------------------------------------------------------------------------------------

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _f1(prediction: str, reference: str) -> float:
    pred = normalize_text(prediction).split()
    ref = normalize_text(reference).split()
    if not pred or not ref:
        return 0.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred)
    recall = common / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: Sequence[str] | str) -> float:
    """Token-multiset F1, max over references; 0 when either side normalises to nothing.

    Note the inherited quirk: "A" normalises to nothing (it is an article), so a bare letter
    answer "A" scores 0 against the reference "A".
    """
    refs = [references] if isinstance(references, str) else list(references)
    return max((_f1(prediction, ref) for ref in refs), default=0.0)


# --------------------------------------------------------------------------------------------
# Scoring each task metric
# --------------------------------------------------------------------------------------------


def _gold_index(item: ScorableItem) -> int | None:
    gold = item.meta.get("gold_index")
    if isinstance(gold, int):
        return gold
    if item.references and len(item.references[0]) == 1 and item.references[0] in MC_LETTERS:
        return MC_LETTERS.index(item.references[0])
    return None


def _score_mc(item: ScorableItem, text: str) -> float:
    gold = _gold_index(item)
    if gold is None:
        raise ValueError("mc_letter items need meta['gold_index'] or a gold letter reference")
    choices = item.meta.get("choices")
    options: Sequence[str] | int = (
        [str(c) for c in choices] if isinstance(choices, list) and choices else max(4, gold + 1)
    )
    return 1.0 if extract_choice(text, options) == gold else 0.0


def _score_number(item: ScorableItem, text: str) -> float:
    predicted = extract_number(text)
    if predicted is None:
        return 0.0
    return 1.0 if any(numbers_equal(predicted, ref) for ref in item.references) else 0.0


def _score_math(item: ScorableItem, text: str) -> float:
    predicted = extract_math_answer(text)
    if predicted is None:
        return 0.0
    return 1.0 if any(math_equal(predicted, ref) for ref in item.references) else 0.0


@functools.lru_cache(maxsize=4096)
def _passes(code: str, setup: str, asserts: tuple[str, ...], timeout_s: float) -> bool:
    # The same reply is often scored more than once (reward, then evaluation tables).
    return passes_tests(code, setup, asserts, timeout_s=timeout_s)


def _score_mbpp(item: ScorableItem, text: str, timeout_s: float) -> float:
    tests = item.meta.get("test_list")
    if not isinstance(tests, list) or not tests:
        raise ValueError("mbpp_pass items need meta['test_list'] (the benchmark asserts)")
    setup = str(item.meta.get("test_setup_code") or "")
    return 1.0 if _passes(extract_code(text), setup, tuple(str(t) for t in tests), timeout_s) else 0.0


def _score_humaneval(item: ScorableItem, text: str, timeout_s: float) -> float:
    entry_point = str(item.meta["entry_point"])
    code = extract_code(text)
    # A chat model usually repeats the whole function; a completion model continues the stub.
    if not re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        code = str(item.meta.get("code_prompt", "")) + code
    test = str(item.meta["test"])
    split = split_humaneval_check(test, entry_point)
    if split is None:  # a check that is not only asserts: the documented fallback
        return 1.0 if _passes(code, f"{test}\n\ncheck({entry_point})\n", (), timeout_s) else 0.0
    asserts, binding = split
    # The test file's own imports and constants go with the setup; its asserts stay outside.
    setup = _without_check(test) + binding
    return 1.0 if _passes(code, setup, tuple(asserts), timeout_s) else 0.0


def _without_check(test: str) -> str:
    tree = ast.parse(test)
    tree.body = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == "check")]
    return ast.unparse(tree) + "\n"


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _task_score(item: ScorableItem, text: str, metric: str, timeout_s: float) -> float:
    if metric == "mc_letter":
        return _score_mc(item, text)
    if metric == "gsm8k_number":
        return _score_number(item, text)
    if metric == "math_boxed":
        return _score_math(item, text)
    if metric == "mbpp_pass":
        return _score_mbpp(item, text, timeout_s)
    if metric == "humaneval_pass":
        return _score_humaneval(item, text, timeout_s)
    if metric == "token_f1":
        return token_f1(text, item.references)
    raise ValueError(f"unknown metric {metric!r}; expected 'task', 'f1' or one of {TASK_METRICS}")


def score(item: ScorableItem, text: str, metric: str | None = None, *, timeout_s: float = 5.0) -> float:
    """Quality of ``text`` (the replies) for ``item``, in [0, 1].

    ``metric``: ``None`` or ``"task"`` for the item's own task metric (the default reward),
    ``"f1"`` for the paper's token F1, or any name in ``TASK_METRICS`` to force one.
    ``timeout_s`` bounds each sandboxed code run.
    """
    if metric is None or metric == "task":
        return _task_score(item, text, item.metric, timeout_s)
    if metric == "f1":
        return token_f1(text, item.references)
    return _task_score(item, text, metric, timeout_s)


def evaluate_reply(item: ScorableItem, text: str, *, timeout_s: float = 5.0) -> QualityReport:
    """Both numbers every evaluation table reports: the task metric and the paper's F1."""
    return QualityReport(
        task_metric=score(item, text, "task", timeout_s=timeout_s),
        f1=token_f1(text, item.references),
    )
