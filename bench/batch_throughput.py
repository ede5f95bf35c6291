"""``graph.batch`` of N queries vs N sequential ``invoke``s on the default offline pool.

Why: micro-batching (hierrouter_graph/microbatch.py) coalesces the concurrent hops that
``graph.batch`` runs in threads into one left-padded ``generate`` per model. This bench measures
what that buys end to end — router, encoder, cloze specialist and both generators included —
and checks that it changes nothing: every batched trace (route, replies, token counts, costs) is
compared with the sequential one. Target: >= 4x for 32 queries.

Queries are test-split routing items of every task, interleaved (math, code, multiple choice).
The same router answers both ways; sequential ``invoke``s meet no other request, so each of their
hops is a batch of one (what the plain pipeline gives).

    PYTHONPATH=. python bench/batch_throughput.py [--queries 32] [--max-new-tokens 128]
        [--dtype auto|float32|bfloat16] [--max-batch-size 16] [--batch-wait-ms 5]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `hierrouter_graph` and `training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hierrouter_graph import HierRouterGraph, MicroBatchedChatModel, PoolMember, RouterConfig, default_config
from hierrouter_graph.graph import build_pool
from training.datasets import Item, build_routing_dataset


def bench_config(args: argparse.Namespace) -> RouterConfig:
    """The default offline pool with this run's generation length, dtype and batching settings."""
    config = default_config()
    update: dict[str, Any] = {"max_batch_size": args.max_batch_size, "batch_wait_ms": args.batch_wait_ms}
    if args.dtype != "auto":
        update["dtype"] = args.dtype
    models = []
    for spec in config.models:
        changes = dict(update)
        if spec.kind == "generate" and args.max_new_tokens is not None:
            changes["max_new_tokens"] = args.max_new_tokens
        models.append(spec.model_copy(update=changes))
    return RouterConfig.model_validate({**config.model_dump(), "models": models})


def mixed_queries(count: int) -> list[str]:
    """``count`` test items, one task after another, so every pool member gets work."""
    items = build_routing_dataset(per_task=max(10, count)).test
    by_task: dict[str, list[Item]] = {}
    for item in items:
        by_task.setdefault(item.task, []).append(item)
    interleaved = [it for group in itertools.zip_longest(*by_task.values()) for it in group if it is not None]
    if len(interleaved) < count:
        raise SystemExit(f"only {len(interleaved)} test items available, asked for {count}")
    return [item.prompt for item in interleaved[:count]]


def batch_counters(pool: dict[str, PoolMember]) -> dict[str, tuple[int, int]]:
    """(batches, items) so far for every micro-batched member."""
    out: dict[str, tuple[int, int]] = {}
    for name, member in pool.items():
        if isinstance(member.chat_model, MicroBatchedChatModel):
            stats = member.chat_model.batcher.stats()
            out[name] = (stats.batches, stats.items)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the pool's (128)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    config = bench_config(args)
    queries = mixed_queries(args.queries)
    started = time.perf_counter()
    pool = build_pool(config)  # built here so the bench can read each member's batch counters
    router = HierRouterGraph(config, chat_models=pool)
    router.invoke("What is 2 + 2?")  # loads weights, builds kernels: not part of either timing
    print(f"loaded + warm-up in {time.perf_counter() - started:.1f} s")

    before = batch_counters(pool)
    started = time.perf_counter()
    batched = router.batch(queries)
    batched_s = time.perf_counter() - started
    after = batch_counters(pool)

    started = time.perf_counter()
    sequential = [router.invoke(query) for query in queries]
    sequential_s = time.perf_counter() - started

    generated = sum(hop["tokens_out"] for out in sequential for hop in out["trace"])
    same_trace = sum(b["trace"] == s["trace"] for b, s in zip(batched, sequential, strict=True))
    same_answer = sum(b["answer"] == s["answer"] for b, s in zip(batched, sequential, strict=True))
    routes = sorted({" → ".join(h["model"] for h in out["trace"]) for out in sequential})
    new_tokens = args.max_new_tokens or "pool default"
    print(f"{len(queries)} queries, L={config.horizon}, max_new_tokens={new_tokens}, dtype={args.dtype}, ")
    print(f"max_batch_size={args.max_batch_size}, batch_wait_ms={args.batch_wait_ms}")
    print(f"routes taken: {routes}")
    for name, (batches, items) in after.items():
        b, i = batches - before[name][0], items - before[name][1]
        print(f"  {name}: {i} hops in {b} generate batches (mean {i / b if b else 0:.1f})")
    print(f"sequential invokes: {sequential_s:.1f} s  ({generated / sequential_s:.1f} generated tok/s)")
    print(f"graph.batch:        {batched_s:.1f} s")
    print(f"identical traces: {same_trace}/{len(queries)}, identical answers: {same_answer}/{len(queries)}")
    ratio = sequential_s / batched_s
    print(f"batch speed-up = {ratio:.2f}x  (target >= 4x: {'met' if ratio >= 4 else 'NOT met'})")


if __name__ == "__main__":
    main()
