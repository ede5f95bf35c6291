"""Cloze scoring variants of the multiple-choice specialist, on the SPECIALIZATION half only.

Compares three ways to turn option log-likelihoods into a choice — sum over the option's tokens
(what ``ClozeMultipleChoiceChat`` ships), mean per token, mean per character — on validation
items of ARC-Easy, ARC-Challenge and MMLU, which never enter the routing dataset, so choosing the
scoring here does not tune anything on the router's test split.

    python bench/cloze_scoring.py [--per-task 100]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `hierrouter_graph` and `training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hierrouter_graph import ModelSpec
from hierrouter_graph.cloze import ClozeMultipleChoiceChat, parse_multiple_choice
from hierrouter_graph.config import default_cache_dir
from hierrouter_graph.models import build_pool_member
from training.datasets import load_task

SPLITS = [("arc_easy", "validation"), ("arc_challenge", "validation"), ("mmlu", "validation")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-task", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    spec = ModelSpec(name="cloze-mc", kind="cloze_mc", source="offline:smollm2-135m-instruct")
    chat = build_pool_member(spec, default_cache_dir()).chat_model
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
        print(
            f"{task + '/' + split[:3]:<14} {n:>4} {hits['sum'] / n:>6.1%} {hits['token'] / n:>11.1%} "
            f"{hits['char'] / n:>10.1%}"
        )


if __name__ == "__main__":
    main()
