"""A user's dataset as JSONL: one item per line, read with errors that name the line and field.

Why a module of its own: a user brings items in this format to train and evaluate a router on
their own data (``--items``), so the reader validates every field and says exactly which line
of which file is wrong instead of failing later inside scoring.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from training.tasks.answers import MC_LETTERS
from training.tasks.items import HALVES, DatasetFormatError, Item, decode_line, half_for
from training.tasks.metrics import TASK_METRICS

__all__ = ["load_jsonl_dataset", "write_jsonl_dataset"]


def _describe(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_user_line(path: Path, lineno: int, raw: str) -> Item:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(path, lineno, None, "valid JSON", f"error: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise DatasetFormatError(path, lineno, None, "a JSON object", _describe(data))

    def need_str(name: str) -> str:
        if name not in data:
            raise DatasetFormatError(path, lineno, name, "a non-empty string", "nothing (missing)")
        value = data[name]
        if not isinstance(value, str) or not value.strip():
            raise DatasetFormatError(path, lineno, name, "a non-empty string", _describe(value))
        return value

    item_id, task, prompt, metric = (need_str(k) for k in ("id", "task", "prompt", "metric"))
    if metric not in TASK_METRICS:
        raise DatasetFormatError(path, lineno, "metric", f"one of {list(TASK_METRICS)}", repr(metric))
    if "references" not in data:
        raise DatasetFormatError(path, lineno, "references", "a list of strings", "nothing")
    refs = data["references"]
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise DatasetFormatError(path, lineno, "references", "a list of strings", _describe(refs))
    if not refs and metric not in ("mbpp_pass", "humaneval_pass"):
        raise DatasetFormatError(path, lineno, "references", "at least one reference", "[]")
    if metric == "mc_letter" and not re.fullmatch(f"[{MC_LETTERS}]", refs[0]):
        raise DatasetFormatError(
            path,
            lineno,
            "references",
            'the gold letter first, e.g. ["B", "option text"]',
            _describe(refs),
        )
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise DatasetFormatError(path, lineno, "meta", "a JSON object", _describe(meta))
    if metric == "mbpp_pass":
        tests = meta.get("test_list")
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
            raise DatasetFormatError(
                path,
                lineno,
                "meta.test_list",
                "a non-empty list of assert strings",
                _describe(tests),
            )
    if metric == "humaneval_pass":
        for key in ("test", "entry_point"):
            if not isinstance(meta.get(key), str):
                raise DatasetFormatError(path, lineno, f"meta.{key}", "a string", _describe(meta.get(key)))
    half = data.get("half")
    if half is None:
        half = half_for(task, item_id)
    elif half not in HALVES:
        raise DatasetFormatError(path, lineno, "half", f"one of {list(HALVES)}", _describe(half))
    return Item(
        id=item_id,
        task=task,
        prompt=prompt,
        references=list(refs),
        metric=metric,
        half=half,
        meta=meta,
    )


def load_jsonl_dataset(path: str | Path) -> list[Item]:
    """Read a user dataset: one JSON object per line with ``id, task, prompt, references,
    metric`` and optionally ``half`` and ``meta``.

    Blank lines are skipped and unknown fields ignored. A missing ``half`` is derived with the
    same hash rule as the benchmarks, with the whole ``id`` as native id. Any problem raises
    ``DatasetFormatError`` naming the file, the 1-based line and the field, so a user can fix a
    large file without guessing.
    """
    path = Path(path)
    items: list[Item] = []
    first_seen: dict[str, int] = {}
    with path.open("rb") as fh:
        for lineno, raw_bytes in enumerate(fh, start=1):
            raw = decode_line(path, lineno, raw_bytes)
            if not raw.strip():
                continue
            item = _parse_user_line(path, lineno, raw)
            if item.id in first_seen:
                raise DatasetFormatError(
                    path,
                    lineno,
                    "id",
                    "a unique id",
                    f"{item.id!r} again (first on line {first_seen[item.id]})",
                )
            first_seen[item.id] = lineno
            items.append(item)
    if not items:
        raise DatasetFormatError(path, 0, None, "at least one item", "an empty file")
    return items


def write_jsonl_dataset(items: Iterable[Item], path: str | Path) -> Path:
    """Write items in the format ``load_jsonl_dataset`` reads back unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
    return path
