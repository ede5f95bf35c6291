"""Generation speed and quality of a member at float32 and at a faster setting, in one run.

Per member: greedy tokens/s at batch 1 and batch 16 (fixed prompts, every row forced to the same
number of new tokens so batches are comparable), for float32 and the setting under test (default
int8 with the architecture's full-precision modules kept), then the task metric of both settings on
a fixed sample of the SPECIALIZATION half (never a routing item) and the agreement of the faster
setting's batched replies with its one-by-one replies.

    python bench/generation_speed.py --source offline:qwen2.5-coder-0.5b-instruct --per-task 10
    python bench/generation_speed.py --source offline:smollm2-135m-instruct --skip-quality

Target (issue 12): >= 2x float32 at batch 16 with <= 2 points lost on any task.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `hierrouter_graph` and `training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hierrouter_graph.config import ModelSpec, default_cache_dir
from hierrouter_graph.hop import run_hops
from hierrouter_graph.models import build_pool_member, load_causal_lm

PROMPT = "Explain step by step how to compute the sum of the first 100 odd numbers."
TASKS = ("gsm8k", "math", "mbpp")
INSTRUCTION = "Solve the problem step by step, then give the final answer in the format the problem asks for."


def tokens_per_s(spec: ModelSpec, batch: int, new_tokens: int) -> float:
    """Greedy new tokens per second of ``spec``'s model for ``batch`` copies of one prompt."""
    loaded = load_causal_lm(spec, default_cache_dir())
    return decode_tokens_per_s(loaded.model, loaded.tokenizer, batch, new_tokens)


def decode_tokens_per_s(model: Any, tokenizer: Any, batch: int, new_tokens: int) -> float:
    """Greedy new tokens per second for ``batch`` copies of one prompt, every row forced to
    ``new_tokens`` (``min_new_tokens``) so batch sizes compare the same work per row."""
    import torch

    ids = tokenizer([PROMPT] * batch, return_tensors="pt").to(model.device)
    kwargs: dict[str, Any] = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=4, do_sample=False)  # warm-up
        started = time.perf_counter()
        model.generate(**ids, **kwargs, pad_token_id=tokenizer.pad_token_id)
    return batch * new_tokens / (time.perf_counter() - started)


def quality(spec: ModelSpec, per_task: int) -> tuple[dict[str, float], dict[str, str]]:
    """Task metric per task on the first ``per_task`` specialization items, and each item's reply."""
    from training.benchmarks import load_specialization_items
    from training.metrics import score

    member = build_pool_member(spec, default_cache_dir())
    results: dict[str, float] = {}
    replies: dict[str, str] = {}
    for task in TASKS:
        items = load_specialization_items(task)[:per_task]
        hops = run_hops(member, [item.prompt for item in items], INSTRUCTION)
        replies.update({item.id: hop.reply for item, hop in zip(items, hops, strict=True)})
        results[task] = sum(score(item, hop.reply) for item, hop in zip(items, hops, strict=True)) / len(
            items
        )
    return results, replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--fast", choices=("int8", "bfloat16"), default="int8")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--per-task", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=320, help="reply budget of the quality sample")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="only the quality and agreement part")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    base = ModelSpec(name="m", source=args.source, dtype="float32", max_new_tokens=args.max_new_tokens)
    fast = (
        base.model_copy(update={"dtype": "auto", "quantization": "int8"})
        if args.fast == "int8"
        else base.model_copy(update={"dtype": "bfloat16"})
    )
    label = load_causal_lm(fast, default_cache_dir()).backend
    print(f"{args.source}: float32 vs {label}")
    if not args.skip_speed:
        speeds = {
            name: [tokens_per_s(spec, batch, args.new_tokens) for batch in (1, 16)]
            for name, spec in (("float32", base), ("fast", fast))
        }
        print(f"{'setting':<10} {'b1 tok/s':>9} {'b16 tok/s':>10}")
        for name, (b1, b16) in speeds.items():
            print(f"{name:<10} {b1:>9.1f} {b16:>10.1f}")
        print(f"speed-up at batch 16: {speeds['fast'][1] / speeds['float32'][1]:.2f}x")
    if args.skip_quality:
        return
    full, _ = quality(base, args.per_task)
    quick, batched = quality(fast, args.per_task)
    print(f"{'task':<8} {'float32':>8} {'fast':>8}  (n={args.per_task} per task, specialization half)")
    for task in TASKS:
        print(f"{task:<8} {full[task]:>8.1%} {quick[task]:>8.1%}")
    member = build_pool_member(fast.model_copy(update={"max_batch_size": 1}), default_cache_dir())
    from training.benchmarks import load_specialization_items

    items = [item for task in TASKS for item in load_specialization_items(task)[: min(args.per_task, 4)]]
    same = sum(run_hops(member, [item.prompt], INSTRUCTION)[0].reply == batched[item.id] for item in items)
    print(f"batched vs one-by-one greedy replies identical: {same}/{len(items)}")


if __name__ == "__main__":
    main()
