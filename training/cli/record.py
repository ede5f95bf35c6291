"""``python training/record.py``: record the full outcome tree of the chosen items into the store.

python training/record.py --split test --per-task 30 --db runs/replay.sqlite
python training/record.py --split all --horizon 3     # a deeper tree (extends the L=2 one)
python training/record.py --config configs/skills-pool.yaml --split all --db runs/skills.sqlite --status
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import training.replay.record as record
from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.sandbox import SandboxUnavailable
from training.cli.context import load_config, load_run_context
from training.replay.endpoint_hops import HopFailedError
from training.replay.progress import record_progress
from training.replay.record import RecordStats, record_in_chunks, record_outcome_tree
from training.replay.record_meta import record_meta_path, write_record_meta
from training.replay.shipped import shipped_record_for
from training.tasks.items import ALL_TASKS, DEFAULT_PER_TASK, Item
from training.tasks.jsonl_datasets import load_jsonl_dataset
from training.tasks.routing_data import build_routing_dataset

__all__ = ["main", "parser", "record_items"]


def record_items(ns: argparse.Namespace) -> list[Item]:
    """``--items`` (its first ``--per-task`` items), else the benchmarks' ``--split`` at ``--seed``."""
    if ns.items is not None:
        items = load_jsonl_dataset(ns.items)
        return items[: ns.per_task] if ns.per_task else items
    data = build_routing_dataset(ns.tasks, per_task=ns.per_task or DEFAULT_PER_TASK, seed=ns.data_seed)
    return {"test": data.test, "train": data.train, "all": data.train + data.test}[ns.split]


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise argparse.ArgumentTypeError(f"--shard expects K/N with 0 <= K < N (e.g. 0/2), got {text!r}")
    return int(index), int(count)


def parser() -> argparse.ArgumentParser:
    """The flags (``--db`` and ``--seed`` fill ``load_run_context``'s ``replay`` and ``data_seed``)."""
    parser = argparse.ArgumentParser(description=(record.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=None, help="router YAML/JSON (default: offline pool)")
    parser.add_argument("--split", choices=("test", "train", "all"), default="test")
    parser.add_argument(
        "--per-task", type=int, default=None, help=f"items per task (default {DEFAULT_PER_TASK}, as shipped)"
    )
    parser.add_argument("--tasks", nargs="+", default=list(ALL_TASKS), choices=ALL_TASKS)
    parser.add_argument("--items", type=Path, default=None, help="a JSONL dataset instead of the benchmarks")
    parser.add_argument("--db", dest="replay", metavar="DB", type=Path, default=Path("runs/replay.sqlite"))
    parser.add_argument(
        "--horizon",
        type=int,
        default=None,
        help="record routes up to this many hops instead of the config's L (stages beyond the "
        "stage prompts reuse the last prompt unless the config sets stage_prompt_fallback)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--chunk-items",
        type=int,
        default=None,
        help="finish the whole tree of this many task-interleaved items before the next "
        "(default: one pass over all items, level by level)",
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        metavar="K/N",
        help="with --chunk-items: record only chunks K, K+N, K+2N, ... (run N processes on one --db)",
    )
    parser.add_argument(
        "--sequential-endpoints",
        action="store_true",
        help="send endpoint members' hops one at a time (default: each stage's hops concurrently, up "
        "to each member's endpoint.max_concurrency; the replies are the same)",
    )
    parser.add_argument("--seed", dest="data_seed", metavar="SEED", type=int, default=42)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--export-to",
        type=Path,
        default=None,
        help="a gzip JSONL record of this config's replies (e.g. training/data/<pool>.replay.jsonl.gz): "
        "imported before recording, rewritten (atomically) after every completed chunk",
    )
    parser.add_argument(
        "--export-only",
        action="store_true",
        help="with --export-to: write every reply the store holds now (partial trees included) and "
        "exit without recording; how a recording stopped mid-chunk keeps its replies",
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="print how many of the chosen items are complete at each horizon 1..L, per task, in "
        "--db (else in the --export-to file) and exit (loads no model, writes nothing)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--export-shipped",
        action="store_true",
        help="after recording, rewrite the shipped record that fits the config (replies, meta and "
        "state embeddings; as training/export_shipped.py does)",
    )
    return parser


def print_status(ns: argparse.Namespace) -> int:
    """``--status``: the record's progress on the chosen items (``progress.record_progress``) in
    ``--db``, or, where that store does not exist yet, in the ``--export-to`` file (read into a
    temporary store: a fresh clone can see how far the committed record has got)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        source = ns.replay
        if not ns.replay.is_file() and ns.export_to is not None and ns.export_to.is_file():
            source, ns.replay = ns.export_to, Path(folder) / "status.sqlite"
        context = load_run_context(
            ns, items=record_items(ns), require_replay=source == ns.replay, shipped=False
        )
        with context.open_store() as store:
            if source != ns.replay:
                store.import_jsonl_gz(source)
            progress = record_progress(context.config, context.pool, context.train, store)
    print(f"{source}, {ns.split} items of {ns.config or 'the offline pool'}:")
    for line in progress.lines():
        print(f"  {line}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    if ns.export_only and ns.export_to is None:
        parser().error("--export-only needs --export-to FILE (where to write the replies)")
    if ns.export_shipped and shipped_record_for(load_config(ns)) is None:  # now, not after hours of recording
        parser().error(
            "--export-shipped: no shipped record fits this config; start one with "
            "training/export_shipped.py --name NAME"
        )
    if ns.status:
        return print_status(ns)
    # a shipped pool resumes from its shipped record (regenerating nothing), whatever the items
    context = load_run_context(ns, items=record_items(ns), shipped=True, generates=True)
    config = context.config  # --horizon already applied (load_config)
    pool, items, progress = context.pool, context.train, not ns.no_progress
    with context.open_store() as store:
        fingerprints = [spec.fingerprint() for spec in config.models]
        if ns.export_to is not None and ns.export_to.is_file():
            store.import_jsonl_gz(ns.export_to)

        def export_pieces() -> int:
            if ns.export_to is None:
                return 0
            rows = store.export_jsonl_gz(ns.export_to, fingerprints=fingerprints)
            write_record_meta(config, record_meta_path(ns.export_to))
            return rows

        if ns.export_only:
            rows = export_pieces()
            print(f"exported this pool's {rows} replies in {ns.replay} to {ns.export_to}; nothing recorded")
            return 0
        stats: RecordStats
        if ns.chunk_items is None:
            stats = record_outcome_tree(
                config,
                pool,
                items,
                store,
                batch_size=ns.batch_size,
                progress=progress,
                concurrent=not ns.sequential_endpoints,
            )
        else:
            stats = record_in_chunks(
                config,
                pool,
                items,
                store,
                ns.chunk_items,
                batch_size=ns.batch_size,
                progress=progress,
                shard=ns.shard,
                on_chunk=export_pieces,
                concurrent=not ns.sequential_endpoints,
                log=lambda line: print(line, file=sys.stderr, flush=True),
            )
        total = len(store)
        if ns.export_shipped:
            from training.replay.export_shipped import export_shipped

            assert context.shipped is not None  # checked before recording
            rows, complete, contexts = export_shipped(store, config, context.shipped, seed=ns.data_seed)
            print(
                f"exported {rows} replies to {context.shipped.replay} and the embeddings of "
                f"{contexts} decision contexts of {complete} complete items to {context.shipped.embeddings}"
            )
    print(
        f"recorded the outcome tree of {stats.items} items (L={config.horizon}, M={len(pool)}): "
        f"{stats.unique_hops} unique hops of {stats.tree_hops} — {stats.generated} generated, "
        f"{stats.reused} reused; {stats.tokens_in + stats.tokens_out} tokens generated at "
        f"{stats.tokens_per_s:.1f} tokens/s; {stats.wall_s:.1f} s; store {ns.replay} holds {total} replies"
    )
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(SandboxUnavailable, HopFailedError))


if __name__ == "__main__":
    raise SystemExit(cli())
