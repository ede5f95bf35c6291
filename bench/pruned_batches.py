"""Pruned vs whole greedy batches on a real member, in one run: wall time and reply agreement.

A pruned batch (``BatchGenerator(prune_finished=True)``, the default) drops each row from the
batch and its KV cache as soon as the row stops; a whole batch steps every row until the longest
reply ends. Both generate the same recorded stage-0 prompts of the member (from the pool's shipped
record), in one batch, on the same thread count.

    python bench/pruned_batches.py --member qwen2.5-coder-0.5b --prompts 16
    python bench/pruned_batches.py --config configs/smollm2-gemma-pool.yaml --member smollm2-135m

Prints both wall times, the ratio, how many replies the two agree on and how many equal the record
(int8 members quantize activations per batch, so a reply can depend on its batch mates).
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import torch

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.defaults import default_config
from hierrouter_graph.hop import messages_from_cache_key
from hierrouter_graph.members.generation import BatchGenerator
from hierrouter_graph.members.local import build_pool_member
from training.replay.shipped import shipped_record_for


def recorded_stage0(config: RouterConfig, member: str, count: int) -> list[tuple[str, str]]:
    """(prompt key, recorded reply) of ``count`` distinct stage-0 hops of ``member``."""
    record = shipped_record_for(config)
    if record is None:
        raise SystemExit("--config: no shipped record fits this pool (training/data/*.replay.meta.json)")
    fingerprint = config.spec(member).fingerprint()
    instruction = config.stage_prompt(0)
    chosen: dict[str, str] = {}
    with gzip.open(record.replay, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["fingerprint"] == fingerprint and instruction in row["prompt"].split("\n\n", 1)[0]:
                chosen.setdefault(row["prompt"], row["reply"])
            if len(chosen) == count:
                break
    if not chosen:
        raise SystemExit(f"--member {member}: no recorded stage-0 hop in {record.replay}")
    return list(chosen.items())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=None, help="router YAML/JSON (default: default pool)")
    parser.add_argument("--member", default="qwen2.5-coder-0.5b", help="a generating member of the pool")
    parser.add_argument("--prompts", type=int, default=16, help="recorded stage-0 prompts, one batch")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = RouterConfig.from_file(args.config) if args.config is not None else default_config()
    hops = recorded_stage0(config, args.member, args.prompts)
    generator = build_pool_member(config.spec(args.member), config.resolved_cache_dir).batch_generate
    if not isinstance(generator, BatchGenerator):
        raise SystemExit(f"--member {args.member}: not a local generating member")
    messages = [messages_from_cache_key(key) for key, _ in hops]
    replies: dict[bool, list[str]] = {}
    seconds: dict[bool, float] = {}
    for prune in (True, False):
        generator.prune_finished = prune
        started = time.perf_counter()
        replies[prune] = [reply for reply, _ in generator.generate_scored(messages)]
        seconds[prune] = time.perf_counter() - started
    same = sum(a == b for a, b in zip(replies[True], replies[False], strict=True))
    recorded = sum(a == r for a, (_, r) in zip(replies[True], hops, strict=True))
    print(f"{args.member}: {len(hops)} recorded stage-0 prompts, one batch, {args.threads} thread(s)")
    ratio = seconds[False] / seconds[True]
    print(f"pruned {seconds[True]:.1f} s, whole {seconds[False]:.1f} s -> {ratio:.2f}x")
    print(f"pruned == whole replies {same}/{len(hops)}; pruned == recorded {recorded}/{len(hops)}")


if __name__ == "__main__":
    main()
