"""Rewrite the shipped record of the default pool from a replay store: replies and state embeddings.

    python training/export_shipped.py [--db runs/replay.sqlite] [--threads N]

Writes ``training/data/offline_pool.replay.jsonl.gz`` (every default-pool reply in the store) and
``training/data/offline_pool.state_embeddings.safetensors`` (the encoder's float16 embedding of
every decision context of the default routing dataset's items whose tree is complete, train and
test). Contexts the store has not encoded yet are encoded here, in batches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `hierrouter_graph` and `training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hierrouter_graph.cli_errors import run_cli
from training.replay import ReplayStore
from training.sandbox import SandboxUnavailable

__all__ = ["export_shipped", "main"]


def export_shipped(store: ReplayStore, seed: int = 42, batch_size: int = 256) -> tuple[int, int, int]:
    """Export the default pool's replies and its decision-state embeddings; returns the counts
    (replies, complete items, contexts)."""
    from hierrouter_graph.defaults import default_config
    from hierrouter_graph.encoder import load_encoder
    from hierrouter_graph.graph import build_pool
    from training.datasets import ALL_TASKS, DEFAULT_PER_TASK
    from training.replay import CachedEncoder
    from training.routing_data import build_routing_dataset
    from training.shipped import export_shipped_embeddings, export_shipped_replay
    from training.tree import complete_items, decision_contexts

    config = default_config()
    replies = export_shipped_replay(store)
    data = build_routing_dataset(ALL_TASKS, per_task=DEFAULT_PER_TASK, seed=seed)
    pool = build_pool(config)
    items = complete_items(config, pool, data.train + data.test, store)
    contexts = decision_contexts(config, pool, items, store)
    encoder = CachedEncoder(
        load_encoder(config.encoder, config.max_seq_len, cache_dir=config.resolved_cache_dir), store
    )
    for start in range(0, len(contexts), batch_size):
        encoder.encode(contexts[start : start + batch_size])
    exported = export_shipped_embeddings(store, contexts, encoder.name)
    return replies, len(items), exported


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=Path("runs/replay.sqlite"))
    parser.add_argument("--seed", type=int, default=42, help="the routing dataset's seed (as recorded)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if not args.db.is_file():
        parser.error(f"--db {args.db}: no replay store there (record one with training/record.py)")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from training.shipped import SHIPPED_EMBEDDINGS, SHIPPED_REPLAY

    with ReplayStore(args.db) as store:
        replies, items, contexts = export_shipped(store, seed=args.seed)
    print(f"exported {replies} replies to {SHIPPED_REPLAY}")
    print(
        f"exported {contexts} decision-context embeddings of {items} complete items to {SHIPPED_EMBEDDINGS}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, extra=(SandboxUnavailable,)))
