"""Resident memory of a shared-base pool vs the same members each loaded on its own.

The pool: SmolLM2-135M-Instruct (generalist), the cloze-mc specialist on the same weights, and two
LoRA members over that base (adapters made here with peft: random init, rank ``--rank`` on
q/k/v/o, saved to a temporary folder). Every measurement runs in a FRESH subprocess, so nothing is
shared by accident and nothing freed earlier hides in the allocator: it imports the library,
builds its members, runs one hop on each (so lazily touched pages are resident), then reads its
resident set size. A process that only imports (no model) is measured too, so the models' own
share is printed net of the interpreter and libraries as well. Host memory on CPU (``device``
cpu): RSS does not see GPU memory.

    python bench/pool_memory.py [--rank 16]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hierrouter_graph import ModelSpec, RouterConfig, run_hop
from hierrouter_graph.config import default_cache_dir
from hierrouter_graph.members.build import build_pool
from hierrouter_graph.members.local import load_causal_lm

SOURCE = "offline:smollm2-135m-instruct"
ADAPTERS = ("lora-a", "lora-b")
MEMBERS = ("smollm2-135m", "cloze-mc", *ADAPTERS)
QUERY = "Which gas do plants absorb?\n\nA. Oxygen\nB. Carbon dioxide\nC. Nitrogen\nD. Helium"
MIB = 1024 * 1024


def _rss_bytes() -> tuple[int, int]:
    """(current, peak) resident set size of this process."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024, peak
    return peak, peak


def _make_adapters(folder: Path, rank: int) -> None:
    """Two LoRA adapters over SmolLM2 with random (non-zero) weights, as ``save_pretrained`` writes them."""
    import torch
    from peft import LoraConfig, get_peft_model

    for seed, name in enumerate(ADAPTERS):
        base = load_causal_lm(ModelSpec(name="base", source=SOURCE, device="cpu"), default_cache_dir()).model
        torch.manual_seed(seed)
        config = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            init_lora_weights=False,
        )
        model = get_peft_model(base, config)
        model.peft_config["default"].base_model_name_or_path = SOURCE
        model.save_pretrained(str(folder / name))
        model.unload()  # back to the plain base for the next adapter


def _specs(adapters: Path, names: tuple[str, ...]) -> list[ModelSpec]:
    common: dict[str, Any] = {"source": SOURCE, "device": "cpu", "base_rate": 0.001}
    specs = {
        "smollm2-135m": ModelSpec(name="smollm2-135m", max_new_tokens=8, **common),
        "cloze-mc": ModelSpec(name="cloze-mc", kind="cloze_mc", **common),
        **{
            name: ModelSpec(name=name, adapter=str(adapters / name), max_new_tokens=8, **common)
            for name in ADAPTERS
        },
    }
    return [specs[name] for name in names]


def _child(role: str, adapters: Path) -> None:
    """One measurement: build the members of ``role`` (none for 'imports'), one hop each, print RSS."""
    if role == "imports":  # the libraries the members load, without a model
        for module in ("torch", "transformers", "peft", "langchain_huggingface"):
            importlib.import_module(module)
        transformers = importlib.import_module("transformers")
        _ = transformers.AutoModelForCausalLM, transformers.AutoTokenizer, transformers.pipeline
    else:
        names = MEMBERS if role == "pool" else (role,)
        config = RouterConfig.model_validate({"models": _specs(adapters, names), "horizon": 1})
        pool = build_pool(config)
        for member in pool.values():
            run_hop(member, QUERY, config.stage_prompt(0))
    current, peak = _rss_bytes()
    peak = max(peak, current)  # ru_maxrss is sampled; never print a peak below the current size
    print(json.dumps({"rss": current, "peak": peak}))


def _run_child(role: str, adapters: Path, rank: int) -> str:
    """Run this script as ``--child role`` in a fresh interpreter; its stdout."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [sys.executable, __file__, "--child", role, "--adapters", str(adapters), "--rank", str(rank)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{role}: child process failed\n{done.stderr[-4000:]}")
    return done.stdout


def _measure(role: str, adapters: Path, rank: int) -> dict[str, int]:
    result: dict[str, int] = json.loads(_run_child(role, adapters, rank).strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank of the two adapters")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--adapters", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        if args.child == "make-adapters":
            _make_adapters(args.adapters, args.rank)
        else:
            _child(args.child, args.adapters)
        return

    with tempfile.TemporaryDirectory(prefix="pool-memory-") as tmp:
        adapters = Path(tmp)
        _run_child("make-adapters", adapters, args.rank)
        sizes = {name: sum(f.stat().st_size for f in (adapters / name).iterdir()) for name in ADAPTERS}
        rows = {role: _measure(role, adapters, args.rank) for role in ("imports", "pool", *MEMBERS)}

    base = rows["imports"]["rss"]
    print(
        f"pool: {', '.join(MEMBERS)} over {SOURCE} (fp32, cpu); LoRA rank {args.rank} on q/k/v/o, "
        f"adapter folders {', '.join(f'{n} {s / MIB:.1f} MiB' for n, s in sizes.items())}"
    )
    print(f"{'process':<28} {'RSS MiB':>9} {'peak MiB':>9} {'net of imports':>15}")
    for role, label in [("imports", "imports only (no model)"), ("pool", "shared pool (4 members)")] + [
        (name, f"{name} alone") for name in MEMBERS
    ]:
        rss, peak = rows[role]["rss"], rows[role]["peak"]
        print(f"{label:<28} {rss / MIB:>9.0f} {peak / MIB:>9.0f} {(rss - base) / MIB:>15.0f}")
    alone = sum(rows[name]["rss"] for name in MEMBERS)
    alone_net = alone - len(MEMBERS) * base
    shared, shared_net = rows["pool"]["rss"], rows["pool"]["rss"] - base
    print(f"{'sum of members alone':<28} {alone / MIB:>9.0f} {'':>9} {alone_net / MIB:>15.0f}")
    print(
        f"shared / sum alone: {shared / alone:.3f} of the RSS; net of imports {shared_net / alone_net:.3f} "
        f"(memory saved: {(alone - shared) / MIB:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
