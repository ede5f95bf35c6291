"""Rewrite a pool's shipped record from a replay store: replies, what produced them, state embeddings.

    python training/export_shipped.py [--config FILE] [--name NAME] [--db runs/replay.sqlite] [--threads N]

Writes ``training/data/NAME.replay.jsonl.gz`` (every reply of the config's members in the store),
``NAME.replay.meta.json`` (members' fingerprints and backends, stage prompts: how
``training.replay.shipped.shipped_record_for`` finds the record for a config) and
``NAME.state_embeddings.safetensors`` (the encoder's float16 embedding of every decision context of
the benchmark items whose tree is complete, train and test, and every item's query). Contexts the
store has not encoded yet are encoded here, in batches. NAME defaults to the shipped record that
already fits the config.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.config import RouterConfig
from hierrouter_graph.sandbox import SandboxUnavailable
from training.replay.shipped import ShippedRecord
from training.replay.store import ReplayStore

__all__ = ["export_shipped", "main"]


def export_shipped(
    store: ReplayStore, config: RouterConfig, record: ShippedRecord, seed: int = 42, batch_size: int = 256
) -> tuple[int, int, int]:
    """Export ``config``'s replies, its meta and its decision-state embeddings to ``record``;
    returns the counts (replies, complete items, contexts)."""
    from hierrouter_graph.members.build import build_pool
    from hierrouter_graph.policy.encoder import load_encoder
    from training.replay.readers import CachedEncoder
    from training.replay.record_meta import write_record_meta
    from training.replay.shipped import export_shipped_embeddings
    from training.replay.tree import complete_items, decision_contexts
    from training.tasks.items import ALL_TASKS, DEFAULT_PER_TASK
    from training.tasks.routing_data import build_routing_dataset

    fingerprints = [spec.fingerprint() for spec in config.models]
    replies = store.export_jsonl_gz(record.replay, fingerprints=fingerprints)
    write_record_meta(config, record.meta)
    data = build_routing_dataset(ALL_TASKS, per_task=DEFAULT_PER_TASK, seed=seed)
    pool = build_pool(config, weights=False)  # replay only: tokenizers, no weights
    items = complete_items(config, pool, data.train + data.test, store)
    # every query's first state too, complete tree or not: evaluating then encodes nothing at depth 0
    contexts = [
        *decision_contexts(config, pool, items, store),
        *(item.prompt for item in data.train + data.test),
    ]
    encoder = CachedEncoder(
        load_encoder(config.encoder, config.max_seq_len, cache_dir=config.resolved_cache_dir), store
    )
    for start in range(0, len(contexts), batch_size):
        encoder.encode(contexts[start : start + batch_size])
    exported = export_shipped_embeddings(store, contexts, encoder.name, record.embeddings)
    return replies, len(items), exported


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--config", type=Path, default=None, help="router YAML/JSON (default: the default pool)"
    )
    parser.add_argument(
        "--name", default=None, help="the record's name in training/data (default: the record that fits)"
    )
    parser.add_argument("--db", type=Path, default=Path("runs/replay.sqlite"))
    parser.add_argument("--seed", type=int, default=42, help="the routing dataset's seed (as recorded)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if not args.db.is_file():
        parser.error(f"--db {args.db}: no replay store there (record one with training/record.py)")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from hierrouter_graph.defaults import default_config
    from training.replay.shipped import shipped_record_for

    config = RouterConfig.from_file(args.config) if args.config is not None else default_config()
    record = ShippedRecord(args.name) if args.name is not None else shipped_record_for(config)
    if record is None:
        parser.error("--name: no shipped record fits this config yet; name the new one (e.g. --name my-pool)")
    with ReplayStore(args.db) as store:
        replies, items, contexts = export_shipped(store, config, record, seed=args.seed)
    print(f"exported {replies} replies to {record.replay} (and {record.meta.name})")
    print(f"exported {contexts} decision-context embeddings of {items} complete items to {record.embeddings}")
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(SandboxUnavailable,))


if __name__ == "__main__":
    raise SystemExit(cli())
