"""Replay stores and datasets that are not what they should be fail at open, naming the file."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.hop import CachedReply
from hierrouter_graph.sandbox import SandboxUnavailable
from training.replay.checks import ReplayStoreError
from training.replay.store import ReplayStore
from training.tasks.items import DatasetFormatError
from training.tasks.jsonl_datasets import load_jsonl_dataset


def _filled_store(path: Path, n: int = 2000) -> Path:
    with ReplayStore(path) as store:
        store.put_many([("fp", f"prompt {i}", CachedReply("réponse " * 40 + str(i), i, i)) for i in range(n)])
    return path


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite"
    path.write_text("this is a text file\n")
    with pytest.raises(ReplayStoreError, match=rf"{path}: .*not a SQLite database"):
        ReplayStore(path)


def test_a_zero_byte_file_is_an_error_not_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite"
    path.touch()
    with pytest.raises(ReplayStoreError, match=rf"{path}: .*zero-byte file"):
        ReplayStore(path)
    assert path.stat().st_size == 0  # untouched


def test_a_foreign_database_is_not_adopted(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(ReplayStoreError, match=rf"{path}: a SQLite database but not a replay store"):
        ReplayStore(path)
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"customers"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_page_of_random_bytes_is_caught_at_open(tmp_path: Path, seed: int) -> None:
    path = _filled_store(tmp_path / "replay.sqlite")
    pages = path.stat().st_size // 4096
    rng = random.Random(seed)
    with path.open("r+b") as fh:
        fh.seek(rng.randrange(2, pages) * 4096)
        fh.write(rng.randbytes(4096))
    with pytest.raises(ReplayStoreError, match=rf"{path}: .*(corrupted|damaged)") as info:
        ReplayStore(path)
    assert "\n" not in str(info.value)


def test_truncated_store_is_caught_at_open(tmp_path: Path) -> None:
    path = _filled_store(tmp_path / "replay.sqlite")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReplayStoreError, match=str(path)):
        ReplayStore(path)


def test_healthy_and_empty_databases_still_open(tmp_path: Path) -> None:
    path = _filled_store(tmp_path / "replay.sqlite", n=10)
    with ReplayStore(path) as store:
        assert len(store) == 10
    empty = tmp_path / "empty.sqlite"
    with sqlite3.connect(empty) as conn:  # a valid SQLite file with no tables is fine (no file too)
        conn.execute("CREATE TABLE t (x)")
        conn.execute("DROP TABLE t")
    assert empty.stat().st_size > 0
    with ReplayStore(empty) as store:
        assert len(store) == 0


def test_dataset_encoding_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    good = b'{"id": "a", "task": "t", "prompt": "p", "references": ["x"], "metric": "token_f1"}\n'
    path.write_bytes(good + b"\n" + b'{"id": "b", "task": "t", "prompt": "caf\xe9"}\n')
    with pytest.raises(DatasetFormatError, match=rf"{path}, line 3: expected UTF-8 text, got byte 0xe9"):
        load_jsonl_dataset(path)
    with pytest.raises(ValueError):  # still a ValueError, as before
        load_jsonl_dataset(path)


def test_training_clis_print_the_sandbox_refusal_as_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def main(argv: list[str]) -> int:
        raise SandboxUnavailable("refusing to run model-written code: install bubblewrap")

    assert run_cli(main, [], extra=(SandboxUnavailable,)) == 2
    assert capsys.readouterr().err.startswith("error: refusing to run model-written code")
