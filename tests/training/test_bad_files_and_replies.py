"""Issue 27, items 4-5: bad record files are named, any model string is scored, a record made on
other hardware says so (once)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from hierrouter_graph import RouterConfig, build_pool
from hierrouter_graph.hop import run_hop
from hierrouter_graph.members.pool import PoolMember
from training.replay.file import read_records, write_records
from training.replay.shipped import ShippedFileError, ShippedRecord, note_replayed_numerics
from training.replay.store import ReplayStore
from training.tasks.metrics import TASK_METRICS, score


@dataclasses.dataclass
class _Item:
    references: list[str]
    metric: str
    meta: dict[str, Any]


_ITEMS = {
    "mc_letter": _Item(["B"], "mc_letter", {"gold_index": 1, "choices": ["a", "b", "c", "d"]}),
    "gsm8k_number": _Item(["42"], "gsm8k_number", {}),
    "math_boxed": _Item(["\\frac{1}{2}"], "math_boxed", {}),
    "mbpp_pass": _Item(["def f"], "mbpp_pass", {"test_list": ["assert f() == 3"]}),
    "humaneval_pass": _Item(
        [""],
        "humaneval_pass",
        {"entry_point": "f", "test": "def check(candidate):\n    assert candidate() == 3\n"},
    ),
    "token_f1": _Item(["hello world"], "token_f1", {}),
}
_HOSTILE_TEXTS = {
    "lone surrogate": "the answer \ud800 is 42 \\boxed{\ud800} ```python\ndef f(): return '\ud800'\n```",
    "NUL bytes": "x\x00 42 \\boxed{4\x002} ```python\ndef f():\x00 return 3\n```",
    # 2,000 unclosed \boxed{ took ~50 s to scan before the one-pass brace matcher
    "huge, unbalanced": ("9" * 100 + " \\boxed{") * 2000 + "```python\n" + "x = 1\n" * 50_000 + "```",
    "control characters": "\x1b[31m\r\n\u202e 42 \\boxed{{{" * 300,
}


@pytest.mark.parametrize("text", list(_HOSTILE_TEXTS.values()), ids=list(_HOSTILE_TEXTS))
def test_scoring_never_crashes_on_any_string_a_model_can_return(text: str) -> None:
    assert set(_ITEMS) == set(TASK_METRICS)
    for metric, item in _ITEMS.items():
        value = score(item, text)
        assert value in (0.0, 1.0) or metric == "token_f1", metric
        assert 0.0 <= value <= 1.0


def test_a_reply_with_a_lone_surrogate_is_stored_and_replayed_as_valid_text(
    tiny_config: RouterConfig, tmp_path: Path
) -> None:
    counter = build_pool(tiny_config)["tiny-a"].counter
    member = PoolMember("remote", FakeListChatModel(responses=["bad \ud800 text"]), 0.001, counter=counter)
    with ReplayStore(tmp_path / "replay.sqlite") as store:
        hop = run_hop(member, "q", "Answer.", cache=store)
        assert hop.reply == "bad \ufffd text"
        again = run_hop(member, "q", "Answer.", cache=store)
        assert again.cached and again.reply == "bad \ufffd text"


def test_a_truncated_or_foreign_record_file_is_named(tmp_path: Path) -> None:
    good = tmp_path / "good.replay.jsonl.gz"
    rows = [("fp", f"prompt {i}", "reply " * 200 + str(i), 3, 200, None, None, None) for i in range(50)]
    write_records(good, rows)
    assert len(read_records(good)[0]) == 50
    truncated = tmp_path / "truncated.replay.jsonl.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated\.replay\.jsonl\.gz: expected a complete gzip file"):
        read_records(truncated)
    plain = tmp_path / "plain.replay.jsonl.gz"
    plain.write_text('{"fingerprint": "fp"}\n')
    with pytest.raises(ValueError, match=r"plain\.replay\.jsonl\.gz: .*not gzip at its start"):
        read_records(plain)
    bad_line = tmp_path / "bad.replay.jsonl.gz"
    bad_line.write_bytes(gzip.compress(b'{"fingerprint": "fp"}\n'))
    with pytest.raises(ValueError, match=r"bad\.replay\.jsonl\.gz:1: not a replay record"):
        read_records(bad_line)


def test_a_meta_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    record = ShippedRecord("pool", tmp_path)
    record.meta.write_bytes(b'{"members": "\xff\xfe"}')
    with pytest.raises(ShippedFileError, match=r"pool\.replay\.meta\.json: not readable JSON"):
        record.read_meta()


def test_a_record_made_with_other_numerics_says_so_once(tiny_config: RouterConfig, tmp_path: Path) -> None:
    from hierrouter_graph.members.local import describe_backend

    here = {s.name: describe_backend(s, tiny_config.resolved_cache_dir) for s in tiny_config.models}
    members = {s.name: {"fingerprint": s.fingerprint(), "backend": here[s.name]} for s in tiny_config.models}
    record = ShippedRecord("tiny", tmp_path)
    meta = {"members": members, "stage_prompts": [tiny_config.stage_prompt(0)]}
    record.meta.write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert note_replayed_numerics(record, tiny_config) == []  # made here: nothing to say
    members["tiny-a"]["backend"] = "transformers cpu bfloat16"
    record.meta.write_text(json.dumps(meta))
    with pytest.warns(RuntimeWarning, match=r"tiny-a: recorded with 'transformers cpu bfloat16'") as seen:
        differences = note_replayed_numerics(record, tiny_config)
    assert differences == [f"tiny-a: recorded with 'transformers cpu bfloat16', this machine would use "
                           f"'{here['tiny-a']}'"]  # fmt: skip
    assert len(seen) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        note_replayed_numerics(record, tiny_config)  # the second time: silent
