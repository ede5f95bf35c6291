"""Generation speed and quality of a member at float32 and at a faster setting, in one run.

Per member: greedy tokens/s at batch 1 and batch 16 (fixed prompts, every row forced to the same
number of new tokens so batches are comparable), for float32 and the setting under test (default
int8 with the architecture's full-precision modules kept), then the task metric of both settings on
a fixed sample of the SPECIALIZATION half (never a routing item) and the agreement of the faster
setting's batched replies with its one-by-one replies.

    python bench/generation_speed.py --source offline:qwen2.5-coder-0.5b-instruct --per-task 10
    python bench/generation_speed.py --source offline:smollm2-135m-instruct --skip-quality

Target (issue 12): >= 2x float32 at batch 16 with <= 2 points lost on any task.

``--engines`` compares the two CPU engines instead (issue 26): the torch int8 path
(``backend: transformers``, ``quantization: int8``) against OpenVINO GenAI (``backend: openvino``,
int8 weights, the resolved dtype), on the same prompt ids: tok/s at batch 1 and 16, prefill tok/s
of a ~500-token prompt, then GSM8K accuracy of float32 / torch int8 / OpenVINO on the first
``--per-task`` specialization items (chat template, ``--max-new-tokens`` budget):

    OMP_NUM_THREADS=1 python bench/generation_speed.py --engines \
        --source offline:qwen2.5-coder-0.5b-instruct --per-task 20 --threads 1
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from hierrouter_graph.config import default_cache_dir
from hierrouter_graph.hop import run_hops
from hierrouter_graph.members.local import build_pool_member, describe_backend, load_causal_lm
from hierrouter_graph.model_spec import ModelSpec

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
    from training.tasks.benchmarks import load_specialization_items
    from training.tasks.metrics import score

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


def _engine_specs(source: str, budget: int) -> dict[str, ModelSpec]:
    base = ModelSpec(name="m", source=source, max_new_tokens=budget, backend="transformers")
    return {
        "float32": base.model_copy(update={"dtype": "float32"}),
        "torch int8": base.model_copy(update={"quantization": "int8"}),
        "openvino": base.model_copy(update={"quantization": "int8", "backend": "openvino"}),
    }


def _openvino_tokens_per_s(member: Any, ids: list[int], batch: int, new_tokens: int) -> float:
    """Like ``decode_tokens_per_s`` on an OpenVINO member: ``batch`` copies of ``ids``, every
    request forced to ``new_tokens`` new tokens (``new_tokens`` 1: the prefill rate of ``ids``)."""
    import numpy as np
    import openvino as ov
    import openvino_genai as og

    pipeline = member.batch_generate.model.pipeline

    def run(tokens: int) -> float:
        configs = []
        for _ in range(batch):
            config = og.GenerationConfig()
            config.max_new_tokens = config.min_new_tokens = tokens
            config.do_sample = False
            configs.append(config)
        tensors = [ov.Tensor(np.asarray([ids], dtype=np.int64)) for _ in range(batch)]
        started = time.perf_counter()
        pipeline.generate(tensors, configs)
        return time.perf_counter() - started

    run(4)  # warm-up
    seconds = run(new_tokens)
    return (len(ids) if new_tokens == 1 else batch * new_tokens) / seconds


def _torch_prefill_per_s(spec: ModelSpec, ids: list[int]) -> float:
    import torch

    loaded = load_causal_lm(spec, default_cache_dir())
    row = torch.tensor([ids])
    with torch.inference_mode():
        loaded.model.generate(row[:, :16], max_new_tokens=1, do_sample=False)  # warm-up
        started = time.perf_counter()
        pad = loaded.tokenizer.pad_token_id
        loaded.model.generate(row, max_new_tokens=1, do_sample=False, pad_token_id=pad)
    return len(ids) / (time.perf_counter() - started)


def compare_engines(args: argparse.Namespace) -> None:
    """Torch int8 vs OpenVINO: speed on the same ids, then GSM8K against float32 (module docstring)."""
    from training.tasks.benchmarks import load_specialization_items
    from training.tasks.metrics import score

    specs = _engine_specs(args.source, args.max_new_tokens)
    ov_member = build_pool_member(specs["openvino"], default_cache_dir())
    torch_int8 = load_causal_lm(specs["torch int8"], default_cache_dir())
    ov_label = describe_backend(specs["openvino"], default_cache_dir())
    print(f"{args.source}: torch = {torch_int8.backend}; openvino = {ov_label}")
    tokenizer = torch_int8.tokenizer
    short = list(tokenizer(PROMPT)["input_ids"])
    long_text = " ".join(item.prompt for item in load_specialization_items("gsm8k")[:8])
    long = list(tokenizer(long_text)["input_ids"])[:500]
    if not args.skip_speed:
        rows = {
            "torch int8": [
                tokens_per_s(specs["torch int8"], 1, args.new_tokens),
                tokens_per_s(specs["torch int8"], 16, args.new_tokens),
                _torch_prefill_per_s(specs["torch int8"], long),
            ],
            "openvino": [
                _openvino_tokens_per_s(ov_member, short, 1, args.new_tokens),
                _openvino_tokens_per_s(ov_member, short, 16, args.new_tokens),
                _openvino_tokens_per_s(ov_member, long, 1, 1),
            ],
        }
        print(f"{'engine':<11} {'b1 tok/s':>9} {'b16 tok/s':>10} {f'prefill {len(long)} tok/s':>20}")
        for name, (b1, b16, prefill) in rows.items():
            print(f"{name:<11} {b1:>9.1f} {b16:>10.1f} {prefill:>20.1f}")
        ratios = [ov / torch for ov, torch in zip(rows["openvino"], rows["torch int8"], strict=True)]
        print("openvino / torch int8: b1 {:.2f}x, b16 {:.2f}x, prefill {:.2f}x".format(*ratios))
    if args.skip_quality:
        return
    items = load_specialization_items("gsm8k")[: args.per_task]
    replies: dict[str, list[str]] = {}
    for name in ("float32", "torch int8", "openvino"):
        member = ov_member if name == "openvino" else build_pool_member(specs[name], default_cache_dir())
        started = time.perf_counter()
        hops = run_hops(member, [item.prompt for item in items], INSTRUCTION)
        replies[name] = [hop.reply for hop in hops]
        right = sum(score(item, hop.reply) for item, hop in zip(items, hops, strict=True))
        capped = sum(hop.tokens_out >= args.max_new_tokens for hop in hops)
        print(
            f"gsm8k {name:<11} {right:g}/{len(items)} right, {capped} at the cap, "
            f"{sum(h.tokens_out for h in hops)} tokens out in {time.perf_counter() - started:.0f}s"
        )
    for name in ("torch int8", "openvino"):
        same = sum(a == b for a, b in zip(replies[name], replies["float32"], strict=True))
        print(f"{name} replies identical to float32: {same}/{len(items)}")


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
    parser.add_argument("--engines", action="store_true", help="torch int8 vs OpenVINO (issue 26)")
    args = parser.parse_args()
    if args.threads is not None:
        import os

        import torch

        torch.set_num_threads(args.threads)
        os.environ["HIERROUTER_OPENVINO_THREADS"] = str(args.threads)
    if args.engines:
        compare_engines(args)
        return
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
    from training.tasks.benchmarks import load_specialization_items

    items = [item for task in TASKS for item in load_specialization_items(task)[: min(args.per_task, 4)]]
    same = sum(run_hops(member, [item.prompt], INSTRUCTION)[0].reply == batched[item.id] for item in items)
    print(f"batched vs one-by-one greedy replies identical: {same}/{len(items)}")


if __name__ == "__main__":
    main()
