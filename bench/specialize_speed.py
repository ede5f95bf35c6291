"""LoRA training speed on SmolLM2-135M: bf16 autocast vs fp32, on the same batches.

Why: ``training/specialists/specialize.py --precision auto`` picks bf16 autocast only where the hardware has
native bf16 (avx512_bf16 / AMX on a CPU); this measures whether that choice is right here. Both
runs train the code specialist's first ``--steps`` length-bucketed batches (same seed, so the
same batches) from the same initial adapter; the first step of each is a warm-up and is not
counted. Tokens/s counts the non-padding tokens (prompt + answer) of the timed steps. bf16 is
measured even where it is not supported natively: it runs, just emulated.

    python bench/specialize_speed.py [--steps 5] [--batch-tokens 2048] [--threads 1]

On a CPU shared with other jobs, use ``--threads 1``: two OpenMP threads on two busy cores wait
on each other at every barrier (measured here: 12 tok/s with 2 threads, 43 with 1).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from hierrouter_graph.defaults import default_config
from training.specialists.examples import domain_items
from training.specialists.lora import GENERALIST, train_specialist
from training.specialists.settings import SpecializeArgs, bf16_supported


def _tokens_per_s(history: list[dict[str, float]]) -> tuple[float, int]:
    timed = history[1:] or history  # the first step warms up allocators and kernels
    tokens = int(sum(r["tokens"] for r in timed))
    return tokens / sum(r["seconds"] for r in timed), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5, help="steps per precision (the first is warm-up)")
    parser.add_argument("--batch-tokens", type=int, default=2048)
    parser.add_argument("--domain", default="code")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 is much faster on a contended CPU)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = default_config()
    spec = config.spec(GENERALIST)
    items = domain_items(args.domain)
    native = bf16_supported("cpu")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {'yes' if native else 'NO'}"
    )
    if not native:
        print("this CPU has no avx512_bf16/AMX: bf16 autocast is emulated here (measured anyway)")
    speeds: dict[str, float] = {}
    for precision in ("bf16", "fp32"):
        with tempfile.TemporaryDirectory() as out:
            run = SpecializeArgs(
                domain=args.domain,
                steps=args.steps,
                batch_tokens=args.batch_tokens,
                precision=precision,
                checkpoint_every=args.steps + 1,
            )
            result = train_specialist(spec, config, items, out, run, progress=False)
        speeds[precision], tokens = _tokens_per_s(result.history)
        loss = result.history[-1]["loss"]
        print(
            f"{precision:5s}: {speeds[precision]:7.1f} tok/s over {tokens} tokens "
            f"({args.steps - 1} timed steps, batch_tokens={args.batch_tokens}), last loss {loss:.3f}"
        )
    ratio = speeds["bf16"] / speeds["fp32"]
    print(f"bf16 autocast / fp32 = {ratio:.2f}x ({'faster' if ratio > 1 else 'slower'} with bf16)")


if __name__ == "__main__":
    main()
