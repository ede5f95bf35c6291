"""What a finished specialist leaves in its folder: the adapter in bf16 and its card.

Why a module of its own: the card (``card.json``) is the specialist's record — method, prompt
format, data counts, training numbers, seed and the pool spec that uses it — and the files are
moved in with ``os.replace``, card last, so a card's presence means the adapter beside it is
complete. ``training/specialists/specialist_eval.py`` reads the card back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.model_spec import ModelSpec
from training.specialists.examples import Example
from training.specialists.settings import SpecializeArgs
from training.tasks.items import SPECIALIZATION

__all__ = ["ADAPTER_FILES", "CARD_NAME", "FINAL_PREFIX", "save_adapter", "specialist_card"]

CARD_NAME = "card.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
FINAL_PREFIX = ".final-"
"""Prefix of the temporary folder the final files are written in (a killed run leaves it behind)."""


def save_adapter(model: Any, out: Path, card: Mapping[str, Any], base_source: str) -> None:
    """Adapter in bf16 safetensors + card, each file moved into ``out`` with ``os.replace``.

    The card goes last: its presence means the adapter beside it is complete.
    """
    from safetensors.torch import load_file, save_file

    tmp = Path(tempfile.mkdtemp(prefix=FINAL_PREFIX, dir=out))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        weights = tmp / "adapter_model.safetensors"
        tensors = load_file(str(weights))
        bf16 = {k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}
        save_file(bf16, str(weights), {"format": "pt"})
        # The member's source, not this machine's cache path: adapters.py checks it against the spec.
        config_file = tmp / "adapter_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = base_source
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / CARD_NAME).write_text(json.dumps(card, indent=2, default=str) + "\n", encoding="utf-8")
        for name in (*ADAPTER_FILES, CARD_NAME):
            (tmp / name).chmod(0o644)
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def specialist_card(
    spec: ModelSpec,
    config: RouterConfig,
    args: SpecializeArgs,
    precision: str,
    counts: Mapping[str, Mapping[str, int]],
    examples: Sequence[Example],
    per_epoch: int,
    total: int,
    history: Sequence[Mapping[str, float]],
    elapsed: float,
    resumes: Sequence[int],
    command: str | None,
) -> dict[str, Any]:
    """The card of a finished run (``history``: the per-step log rows, ``resumes``: the steps it
    was resumed at)."""
    import peft

    tokens = int(sum(r["tokens"] for r in history))
    answer_tokens = int(sum(r["answer_tokens"] for r in history))
    window = max(1, min(10, len(history) // 4))
    spec_dump = spec.model_dump(mode="json", exclude_none=True)
    spec_dump.update(name=f"{spec.name}-{args.domain}", adapter="<this folder>")
    return {
        "format": "hierrouter-specialist/1",
        "name": f"{spec.name}-{args.domain}",
        "domain": args.domain,
        "base": {"member": spec.name, "source": spec.source},
        "method": {
            "type": "LoRA",
            "library": f"peft {peft.__version__}, torch {torch.__version__}",
            "rank": args.rank,
            "alpha": args.lora_alpha,
            "dropout": args.dropout,
            "target_modules": args.as_dict()["target_modules"],
            "optimizer": f"AdamW lr={args.lr} weight_decay={args.weight_decay} "
            f"grad_clip={args.max_grad_norm}",
            "schedule": f"linear warm-up over {args.warmup_fraction:.0%} of the steps, "
            "then linear decay to 0",
            "loss": "cross-entropy on answer tokens only (prompt labels -100)",
            "batches": f"length-bucketed, rows x longest <= {args.batch_tokens} tokens",
            "precision": f"fp32 weights, {'bf16 autocast' if precision == 'bf16' else 'fp32 compute'}",
            "saved_dtype": "bfloat16",
        },
        "prompt_format": {
            "stage": 0,
            "instruction": config.stage_prompt(0),
            "system_prompt": spec.system_prompt,
            "rendering": "hop.build_hop_messages + the tokenizer's chat template (generation prompt on)",
            "target": "direct answer + turn terminator; code: one ```python block (ast-normalised, "
            "no docstrings); math: worked solution ending in \\boxed{answer}",
        },
        "data": {
            "half": SPECIALIZATION,
            "tasks": {k: dict(v) for k, v in counts.items()},
            "examples": len(examples),
            "max_answer_tokens": args.max_answer_tokens,
            "example_tokens": int(sum(len(e.input_ids) for e in examples)),
            "example_answer_tokens": int(sum(e.n_answer for e in examples)),
        },
        "training": {
            "steps": total,
            "batches_per_epoch": per_epoch,
            "epochs": round(total / per_epoch, 3),
            "tokens": tokens,
            "answer_tokens": answer_tokens,
            "seconds": round(elapsed, 1),
            "tokens_per_s": round(tokens / elapsed, 1) if elapsed > 0 else None,
            "first_loss": round(float(np.mean([r["loss"] for r in history[:window]])), 4),
            "final_loss": round(float(np.mean([r["loss"] for r in history[-window:]])), 4),
            "resumed_at_steps": list(resumes),
            "torch_threads": torch.get_num_threads(),
        },
        "seed": args.seed,
        "args": args.as_dict(),
        "use_in_pool": spec_dump,
        "command": command,
    }
