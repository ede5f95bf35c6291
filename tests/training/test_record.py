"""Recording the outcome tree: its exact size, resumability, and surviving kill -9."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hierrouter_graph import RouterConfig
from hierrouter_graph.graph import build_pool
from hierrouter_graph.hop import extend_context, run_hop
from training.cli.record import main
from training.replay.record import interleave_tasks, record_in_chunks, record_outcome_tree
from training.replay.record_meta import batching_of
from training.replay.store import ReplayStore
from training.replay.tree import complete_items, tree_size
from training.tasks.items import Item
from training.tasks.jsonl_datasets import write_jsonl_dataset

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["What is seven times six?", "def add(a, b):", "Which planet is largest? A. Mars B. Jupiter", "q"]


def _items(n: int) -> list[Item]:
    return [Item(f"qa/{i}", "qa", PROMPTS[i], ["42"], "token_f1", "routing") for i in range(n)]


def test_full_tree_has_every_route_and_a_rerun_generates_nothing(tiny_config: RouterConfig, tmp_path) -> None:
    pool = build_pool(tiny_config)
    items = _items(3)
    with ReplayStore(tmp_path / "tree.sqlite") as store:
        first = record_outcome_tree(tiny_config, pool, items, store, batch_size=2, progress=False)
        assert len(store) == tree_size(3, 2, 2) == 3 * (2 + 4)
        assert (first.generated, first.reused, first.unique_hops) == (18, 0, 18)
        assert first.tokens_out > 0 and first.tokens_per_s > 0
        again = record_outcome_tree(tiny_config, pool, items, store, batch_size=2, progress=False)
        assert (again.generated, again.reused) == (0, 18)
        # Every route replays from the store through the hop the graph and the env use.
        for item in items:
            for first_model in tiny_config.model_names:
                hop0 = run_hop(pool[first_model], item.prompt, tiny_config.stage_prompt(0), store)
                context = extend_context(item.prompt, hop0.reply)
                for second_model in tiny_config.model_names:
                    hop1 = run_hop(pool[second_model], context, tiny_config.stage_prompt(1), store)
                    assert hop0.cached and hop1.cached
        assert len(store) == 18


def _replies(db: Path) -> set[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return set(conn.execute("SELECT fingerprint, prompt_sha, reply FROM replies"))


def test_kill_9_then_rerun_completes_the_tree_and_loses_nothing(
    tiny_config: RouterConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """record.py as a subprocess, killed after its first committed batch; the rerun (in-process,
    to spare a second interpreter start) regenerates only what was not committed."""
    tiny_config.to_file(tmp_path / "router.yaml")
    write_jsonl_dataset(_items(3), tmp_path / "items.jsonl")
    db = tmp_path / "replay.sqlite"
    args = [
        "--config", str(tmp_path / "router.yaml"), "--items", str(tmp_path / "items.jsonl"),
        "--db", str(db), "--batch-size", "2", "--no-progress",
    ]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "training/record.py", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},  # this checkout's `training`, whatever is installed
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (db.exists() and _count(db) >= 1):
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    survived = _replies(db)
    total = tree_size(3, 2, 2)
    if len(survived) >= total:
        pytest.fail("record.py finished before it could be killed; make generation slower")
    assert main(args) == 0
    out = capsys.readouterr().out
    summary = re.search(r"(\d+) generated, (\d+) reused", out)
    assert summary, out
    assert (int(summary[1]), int(summary[2])) == (total - len(survived), len(survived))
    final = _replies(db)
    assert len(final) == total and survived <= final
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is being created
        return 0


def test_interleave_tasks_round_robins_and_keeps_each_tasks_order() -> None:
    items = [Item(f"{t}/{i}", t, f"{t} {i}", ["x"], "token_f1", "routing") for t in "ab" for i in range(3)]
    items.append(Item("c/0", "c", "c 0", ["x"], "token_f1", "routing"))
    assert [item.id for item in interleave_tasks(items)] == ["a/0", "b/0", "c/0", "a/1", "b/1", "a/2", "b/2"]


def test_chunks_complete_whole_trees_and_complete_items_finds_exactly_them(
    tiny_config: RouterConfig, tmp_path
) -> None:
    pool = build_pool(tiny_config)
    items = [Item(f"t{i % 2}/{i}", f"t{i % 2}", PROMPTS[i], ["42"], "token_f1", "routing") for i in range(4)]
    with ReplayStore(tmp_path / "tree.sqlite") as store:
        assert complete_items(tiny_config, pool, items, store) == []
        # Only the first chunk: its two items (one per task) are complete, the others untouched.
        record_in_chunks(tiny_config, pool, interleave_tasks(items)[:2], store, chunk_items=2, progress=False)
        assert len(store) == tree_size(2, 2, 2)
        assert complete_items(tiny_config, pool, items, store) == [items[0], items[1]]
        lines: list[str] = []
        stats = record_in_chunks(
            tiny_config, pool, items, store, chunk_items=2, progress=False, log=lines.append
        )
        assert (stats.reused, stats.generated) == (12, 12)
        assert complete_items(tiny_config, pool, items, store) == items
        assert [line.split(":")[0] for line in lines] == [
            "chunk 0 (items 0-1 of 4) done",
            "chunk 1 (items 2-3 of 4) done",
        ]
        assert lines[0].startswith("chunk 0 (items 0-1 of 4) done: 0 hops generated, 12 reused; 0 tokens out")
        assert ": 12 hops generated, 0 reused; " in lines[1]
    with pytest.raises(ValueError, match="chunk_items"):
        record_in_chunks(tiny_config, pool, items, store, chunk_items=0, progress=False)


def test_shards_split_the_chunks_between_processes_sharing_one_store(
    tiny_config: RouterConfig, tmp_path
) -> None:
    pool = build_pool(tiny_config)
    items = [Item(f"t{i % 2}/{i}", f"t{i % 2}", PROMPTS[i], ["42"], "token_f1", "routing") for i in range(4)]
    ordered = interleave_tasks(items)
    with ReplayStore(tmp_path / "tree.sqlite") as store:
        stats = record_in_chunks(tiny_config, pool, items, store, chunk_items=2, progress=False, shard=(1, 2))
        assert stats.items == 2
        assert complete_items(tiny_config, pool, items, store) == ordered[2:]
        stats = record_in_chunks(tiny_config, pool, items, store, chunk_items=2, progress=False, shard=(0, 2))
        assert (stats.items, stats.reused) == (2, 0)
        assert sorted(i.id for i in complete_items(tiny_config, pool, items, store)) == sorted(
            i.id for i in items
        )
        with pytest.raises(ValueError, match="shard"):
            record_in_chunks(tiny_config, pool, items, store, chunk_items=2, progress=False, shard=(2, 2))


def test_shard_flag_names_the_expected_form(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--chunk-items", "4", "--shard", "2/2"])
    assert "--shard expects K/N with 0 <= K < N (e.g. 0/2), got '2/2'" in capsys.readouterr().err


def test_export_to_writes_the_record_after_every_chunk_and_resumes_from_it(
    tiny_config: RouterConfig, tmp_path: Path
) -> None:
    """--export-to: the shippable file holds every reply after each chunk, names the backend that
    made it, and a fresh store seeded from it regenerates nothing."""
    import json

    tiny_config.to_file(tmp_path / "router.yaml")
    write_jsonl_dataset(_items(2), tmp_path / "items.jsonl")
    record = tmp_path / "pool.replay.jsonl.gz"
    args = [
        "--config", str(tmp_path / "router.yaml"), "--items", str(tmp_path / "items.jsonl"),
        "--db", str(tmp_path / "a.sqlite"), "--chunk-items", "1", "--no-progress",
        "--export-to", str(record),
    ]  # fmt: skip
    assert main(args) == 0
    total = tree_size(2, 2, 2)
    with ReplayStore(tmp_path / "b.sqlite") as fresh:
        assert fresh.import_jsonl_gz(record) == total
    meta = json.loads((tmp_path / "pool.replay.meta.json").read_text())
    assert set(meta["members"]) == set(tiny_config.model_names)
    assert all(m["backend"].startswith("transformers cpu float32") for m in meta["members"].values())
    assert all(m["batching"] == batching_of("generate", m["backend"]) for m in meta["members"].values())
    assert "float weights" in next(iter(meta["members"].values()))["batching"]
    args[args.index(str(tmp_path / "a.sqlite"))] = str(tmp_path / "c.sqlite")
    stats_line = io.StringIO()
    with contextlib.redirect_stdout(stats_line):
        assert main(args) == 0
    assert f"0 generated, {total} reused" in stats_line.getvalue()


def test_export_only_writes_partial_trees_and_records_nothing(
    tiny_config: RouterConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recording stopped mid-chunk keeps its replies: --export-only writes what the store holds."""
    tiny_config.to_file(tmp_path / "router.yaml")
    write_jsonl_dataset(_items(2), tmp_path / "items.jsonl")
    pool = build_pool(tiny_config)
    with ReplayStore(tmp_path / "a.sqlite") as store:  # a partial tree: the stage-0 hops of one item
        run_hop(pool["tiny-a"], _items(1)[0].prompt, tiny_config.stage_prompt(0), store)
        partial = len(store)
    record = tmp_path / "pool.replay.jsonl.gz"
    args = [
        "--config", str(tmp_path / "router.yaml"), "--items", str(tmp_path / "items.jsonl"),
        "--db", str(tmp_path / "a.sqlite"), "--export-to", str(record), "--export-only",
    ]  # fmt: skip
    assert main(args) == 0
    assert f"exported this pool's {partial} replies" in capsys.readouterr().out
    with ReplayStore(tmp_path / "b.sqlite") as fresh:
        assert fresh.import_jsonl_gz(record) == partial == 1
    with pytest.raises(SystemExit):
        main(["--export-only"])
    assert "--export-only needs --export-to FILE" in capsys.readouterr().err


def test_export_shipped_without_a_fitting_record_is_refused_before_loading_anything(
    tiny_config: RouterConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import training.cli.record as record_cli

    def must_not_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pool was built before the flags were checked")

    monkeypatch.setattr(record_cli, "load_run_context", must_not_load)
    tiny_config.to_file(tmp_path / "router.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--config",
                str(tmp_path / "router.yaml"),
                "--export-shipped",
                "--db",
                str(tmp_path / "a.sqlite"),
            ]
        )
    assert exit_info.value.code == 2
    assert "--export-shipped: no shipped record fits this config" in capsys.readouterr().err


def test_the_meta_says_how_each_kind_of_member_was_batched() -> None:
    """A record's reader judges replies made on other hardware from this: only int8 torch batches
    make a reply depend on its batch mates."""
    openvino = "openvino cpu weights=int8 dtype=float32 kv=float32 threads=1"
    assert "do not depend on its batch mates" in batching_of("program", openvino)
    torch_int8 = "transformers cpu float32 int8(kept: down_proj)"
    assert "can depend on its batch mates" in batching_of("generate", torch_int8)
    assert "float weights" in batching_of("generate", "transformers cpu float32")
    assert batching_of("cloze_mc", "transformers cpu float32").startswith("no generation")
    assert "max_concurrency" in batching_of("generate", "endpoint")


def test_status_counts_complete_items_per_horizon_and_writes_nothing(
    tiny_config: RouterConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--status: item 0's whole tree, item 1's stage 0 only, item 2 one hop short of stage 0."""
    from training.replay.tree import with_horizon

    tiny_config.to_file(tmp_path / "router.yaml")
    items = [*_items(2), Item("code/0", "code", PROMPTS[1] + " # 2", ["x"], "token_f1", "routing")]
    write_jsonl_dataset(items, tmp_path / "items.jsonl")
    pool = build_pool(tiny_config)
    with ReplayStore(tmp_path / "a.sqlite") as store:
        record_outcome_tree(tiny_config, pool, items[:1], store, progress=False)
        record_outcome_tree(with_horizon(tiny_config, 1), pool, items[1:2], store, progress=False)
        run_hop(pool["tiny-a"], items[2].prompt, tiny_config.stage_prompt(0), store)
        rows = len(store)
    args = [
        "--config", str(tmp_path / "router.yaml"), "--items", str(tmp_path / "items.jsonl"),
        "--db", str(tmp_path / "a.sqlite"), "--status",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "  L=1: 2/3 items complete (qa 2/2, code 0/1)",
        "  L=2: 1/3 items complete (qa 1/2, code 0/1)",
    ]
    with ReplayStore(tmp_path / "a.sqlite") as store:
        assert len(store) == rows


def test_status_reads_the_export_where_the_store_does_not_exist(
    tiny_config: RouterConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_config.to_file(tmp_path / "router.yaml")
    write_jsonl_dataset(_items(2), tmp_path / "items.jsonl")
    record = tmp_path / "pool.replay.jsonl.gz"
    with ReplayStore(tmp_path / "a.sqlite") as store:
        record_outcome_tree(tiny_config, build_pool(tiny_config), _items(1), store, progress=False)
        store.export_jsonl_gz(record)
    args = [
        "--config", str(tmp_path / "router.yaml"), "--items", str(tmp_path / "items.jsonl"),
        "--db", str(tmp_path / "missing.sqlite"), "--export-to", str(record), "--status",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{record}, test items of {tmp_path / 'router.yaml'}:",
        *[f"  L={h}: 1/2 items complete (qa 1/2)" for h in (1, 2)],
    ]
    assert not (tmp_path / "missing.sqlite").exists()
