"""Cloze scoring variants of the multiple-choice specialist, on the SPECIALIZATION half only.

Compares three ways to turn option log-likelihoods into a choice — sum over the option's tokens
(what ``ClozeMultipleChoiceChat`` ships), mean per token, mean per character — on validation
items of ARC-Easy, ARC-Challenge and MMLU, which never enter the routing dataset, so choosing the
scoring here does not tune anything on the router's test split.

    python bench/cloze_scoring.py [--per-task 100] [--source offline:qwen2.5-coder-0.5b-instruct --int8]

``--source`` chooses the scorer's base (the default pool's choice between SmolLM2 and Qwen-0.5B was
made with it: docs/offline-pool.md); the line printed last is accuracy per unit of price.
"""

from __future__ import annotations

import argparse
import random
import time

from hierrouter_graph import ModelSpec
from hierrouter_graph.config import default_cache_dir
from hierrouter_graph.members.cloze import ClozeMultipleChoiceChat, parse_multiple_choice
from hierrouter_graph.members.local import build_pool_member
from training.tasks.benchmarks import load_task

SPLITS = [("arc_easy", "validation"), ("arc_challenge", "validation"), ("mmlu", "validation")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-task", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default="offline:smollm2-135m-instruct")
    parser.add_argument("--int8", action="store_true", help="quantization: int8 (down_proj kept)")
    args = parser.parse_args()
    spec = ModelSpec(
        name="cloze-mc",
        kind="cloze_mc",
        source=args.source,
        quantization="int8" if args.int8 else "none",
    )
    member = build_pool_member(spec, default_cache_dir())
    chat = member.chat_model
    started = time.perf_counter()
    total_hits = total_n = 0
    assert isinstance(chat, ClozeMultipleChoiceChat)
    tokenizer = chat.tokenizer
    print(f"{'task':<14} {'n':>4} {'sum':>6} {'mean/token':>11} {'mean/char':>10}")
    for task, split in SPLITS:
        items = load_task(task, split)
        random.Random(args.seed).shuffle(items)
        hits = {"sum": 0, "token": 0, "char": 0}
        for item in items[: args.per_task]:
            parsed = parse_multiple_choice(item.prompt)
            assert parsed is not None, item.id
            scores, _ = chat.score_options(parsed.question, parsed.options)
            n_tokens = [
                len(tokenizer(f" {o}", add_special_tokens=False)["input_ids"]) for o in parsed.options
            ]
            variants = {
                "sum": scores,
                "token": [s / n for s, n in zip(scores, n_tokens, strict=True)],
                "char": [s / len(f" {o}") for s, o in zip(scores, parsed.options, strict=True)],
            }
            for name, values in variants.items():
                hits[name] += max(range(len(values)), key=values.__getitem__) == item.meta["gold_index"]
        n = min(args.per_task, len(items))
        total_hits, total_n = total_hits + hits["sum"], total_n + n
        print(
            f"{task + '/' + split[:3]:<14} {n:>4} {hits['sum'] / n:>6.1%} {hits['token'] / n:>11.1%} "
            f"{hits['char'] / n:>10.1%}"
        )
    print(
        f"{args.source}{' int8' if args.int8 else ''}: sum-scoring accuracy {total_hits / total_n:.1%} "
        f"over {total_n} items, base_rate {member.base_rate:.6f}/token, "
        f"{time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
