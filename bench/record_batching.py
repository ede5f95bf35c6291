"""Batched vs one-at-a-time generation on SmolLM2: the speed-up ``record.py`` relies on.

Both paths go through the library: one-at-a-time is ``run_hop`` (ChatHuggingFace over the
text-generation pipeline, as the graph's nodes call it), batched is ``run_hops`` (one left-padded
``generate`` per batch). The same prompts are generated both ways in this run; the bench prints
the throughput of each, how many replies are identical, and the ratio last. Target: >= 4x at
batch 16.

    python bench/record_batching.py [--batch 16] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import time

from hierrouter_graph import ModelSpec, run_hop
from hierrouter_graph.config import PAPER_STAGE_PROMPTS, default_cache_dir
from hierrouter_graph.hop import run_hops
from hierrouter_graph.members.local import build_pool_member
from training.tasks.routing_data import build_routing_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    args = parser.parse_args()
    spec = ModelSpec(
        name="smollm2-135m",
        source="offline:smollm2-135m-instruct",
        max_new_tokens=args.max_new_tokens,
        dtype=args.dtype,
    )
    member = build_pool_member(spec, default_cache_dir())
    assert member.batch_generate is not None
    member.batch_generate.max_batch = args.batch  # type: ignore[attr-defined]
    items = build_routing_dataset(per_task=20).train
    contexts = [item.prompt for item in items][: args.batch]
    instruction = PAPER_STAGE_PROMPTS[0]
    run_hop(member, "warm-up", instruction)

    started = time.perf_counter()
    single = [run_hop(member, context, instruction) for context in contexts]
    single_s = time.perf_counter() - started
    started = time.perf_counter()
    batched = run_hops(member, contexts, instruction)
    batched_s = time.perf_counter() - started

    tokens = sum(hop.tokens_out for hop in single)
    same = sum(a.reply == b.reply for a, b in zip(single, batched, strict=True))
    print(f"{len(contexts)} prompts, max_new_tokens={args.max_new_tokens}, dtype={args.dtype}")
    print(f"one at a time: {single_s:.1f} s, {tokens / single_s:.1f} tok/s")
    batched_tokens = sum(hop.tokens_out for hop in batched)
    print(f"batched ({args.batch}): {batched_s:.1f} s, {batched_tokens / batched_s:.1f} tok/s")
    print(f"identical replies: {same}/{len(contexts)}")
    ratio = single_s / batched_s
    print(f"batching speed-up = {ratio:.2f}x  (target >= 4x: {'met' if ratio >= 4 else 'NOT met'})")


if __name__ == "__main__":
    main()
