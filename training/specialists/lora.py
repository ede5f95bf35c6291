"""LoRA specialists of the pool's generalist, trained on the specialization half only.

Why: HierRouter only helps when the pool holds models that are better than the generalist at
*something*. The cheapest way to get one offline is a LoRA adapter on the generalist's own weights
(a few MB, one shared base in memory). The adapter must be trained in exactly the format the pool
will use it in, on data the router never sees:

- **Data**: only ``training.tasks.benchmarks.load_specialization_items`` (the hash-assigned half that the
  routing dataset never draws from). ``code`` = MBPP + HumanEval, ``math`` = GSM8K + MATH.
- **Prompt**: the stage-0 hop exactly as the pool renders it — ``hop.build_hop_messages`` of the
  pool member (its system prompt, the stage-0 instruction of ``RouterConfig.stage_prompts`` + two
  newlines + the query), rendered by the member's own ``TokenizerCounter`` (the tokenizer's chat
  template with the generation prompt) and tokenized with the tokenizer's defaults, as the
  pipeline and ``BatchGenerator`` do. The adapter therefore answers the stage-0 hop; in stage 1 it
  sees a longer context it was not trained on.
- **Target**: a direct answer in the format the task metric reads (``training.tasks.metrics``), followed
  by the chat template's turn terminator so the specialist learns to STOP (replies are priced per
  token). Code: one ```python fence holding the reference solution normalised by ``ast.unparse``
  with docstrings removed (HumanEval: prompt + canonical body, i.e. the complete function). Math:
  the worked solution ending in ``\\boxed{answer}`` (GSM8K: calculator annotations ``<<…>>``
  removed, ``#### N`` → ``The final answer is \\boxed{N}.``). Examples whose target exceeds the
  pool's ``max_new_tokens`` (128) are dropped: at inference such a reply would be cut off.
- **Loss**: cross-entropy on the answer tokens only (prompt labels are -100; the LM head runs on
  answer positions only, see ``answer_loss``).
- **Batches**: length-bucketed (sorted by length, cut at ``batch_tokens`` = rows × longest row,
  batch order shuffled per epoch with ``Random(f"{seed}:epoch:{e}")``): padding otherwise wastes
  most of the compute on a CPU.
- **Precision**: fp32 master weights; bf16 autocast when the hardware has native bf16
  (``--precision auto``), fp32 otherwise (bf16 emulated on a CPU without avx512_bf16 is slower).
- **Resumable**: ``checkpoint.pt`` (adapter, AdamW and scheduler state, step, every RNG, the loss
  history) is written into a temporary folder and moved in place with ``os.replace`` every
  ``checkpoint_every`` steps, so a ``kill -9`` loses at most those steps and a rerun with the same
  arguments finishes with bit-identical weights.
- **Output**: ``OUT/adapter_config.json`` + ``OUT/adapter_model.safetensors`` (bf16, a few MB;
  ``PeftModel.from_pretrained(base, OUT)`` and ``ModelSpec(adapter=OUT)`` read it) and
  ``OUT/card.json`` (method, data counts, steps, time, seed, tokens/s).

    python training/specialists/specialize.py --domain code   # the shipped adapter's recipe (DOMAIN_RECIPES)
    python training/specialists/specialist_eval.py --adapter runs/specialists/code     # pass@1 vs generalist

On a CPU shared with other jobs pass ``--threads 1``: two OpenMP threads on two busy cores wait on
each other at every barrier (measured: 12 tok/s with 2 threads, 43 with 1).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.members.local import build_pool_member, load_causal_lm
from hierrouter_graph.members.sources import resolve_model_folder
from hierrouter_graph.model_spec import ModelSpec
from training.rl import checkpointing
from training.specialists.card import FINAL_PREFIX, save_adapter, specialist_card
from training.specialists.examples import (
    PromptFormat,
    answer_loss,
    build_examples,
    collate,
    epoch_batches,
    train_schedule,
)
from training.specialists.settings import SpecializeArgs, resolve_precision
from training.tasks.items import Item

__all__ = [
    "CHECKPOINT_NAME",
    "GENERALIST",
    "SpecializeArgs",
    "SpecializeResult",
    "train_specialist",
]

GENERALIST = "smollm2-135m"
"""The pool member (of ``default_config()``) whose weights the specialists adapt."""

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.csv"
LOG_COLUMNS = ("step", "loss", "lr", "tokens", "answer_tokens", "seconds")
_TMP_PREFIXES = (".ckpt-", FINAL_PREFIX)
# Hyperparameters that may differ between a checkpoint and the run resuming it (no effect on weights).
RESUMABLE_CHANGES = frozenset({"checkpoint_every"})


# ----------------------------------------------------------------------------------------- training


@dataclass
class SpecializeResult:
    """What a (possibly interrupted) run produced."""

    out: Path
    finished: bool
    steps_done: int
    total_steps: int
    resumed_from: int
    history: list[dict[str, float]] = field(default_factory=list)
    card: dict[str, Any] = field(default_factory=dict)
    model: Any = None


def _lr_lambda(total: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, round(total * warmup_fraction)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _clean_temporaries(out: Path) -> None:
    """Temporary folders of a run killed mid-write: never read, safe to delete."""
    for path in out.iterdir():
        if path.is_dir() and path.name.startswith(_TMP_PREFIXES):
            shutil.rmtree(path, ignore_errors=True)


def _load_checkpoint(path: Path, args: SpecializeArgs, total_steps: int) -> dict[str, Any]:
    advice = "use another --out or pass --no-resume to start over"
    state = checkpointing.load_checkpoint(path, args.as_dict(), RESUMABLE_CHANGES, advice=advice)
    if int(state["total_steps"]) != total_steps:
        raise ValueError(
            f"{path} was written by a run with other settings (total steps differ); resuming would not "
            f"reproduce it — {advice}"
        )
    return state


def _trainable_model(spec: ModelSpec, cache_dir: Path, args: SpecializeArgs) -> tuple[Any, Any]:
    """A private fp32 copy of the member's base weights, wrapped with fresh LoRA layers.

    The weights come from the folder ``local.resolve_model_folder`` resolves for the member (the
    one ``load_causal_lm`` loads) and the tokenizer is the pool's own. The model is NOT the pool's
    shared instance: ``adapters.py`` injects the pool's adapters into that one, and training must
    neither see them nor change what other members generate with.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    tokenizer = load_causal_lm(spec, cache_dir).tokenizer
    folder = resolve_model_folder(spec.source, cache_dir)
    base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    base.config.use_cache = False
    modules = args.target_modules
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.dropout,
        target_modules=modules if isinstance(modules, str) else list(modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(args.seed)  # the LoRA init depends on the seed only, not on what loading consumed
    model = get_peft_model(base, lora)
    return model, tokenizer


def train_specialist(
    spec: ModelSpec,
    config: RouterConfig,
    items: Sequence[Item],
    out: str | os.PathLike[str],
    args: SpecializeArgs,
    *,
    cache_dir: Path | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    command: str | None = None,
) -> SpecializeResult:
    """LoRA-tune ``spec``'s weights on ``items`` in the stage-0 hop format of ``config``.

    ``stop_after`` ends the run after that many steps WITHOUT a final save (what a kill leaves;
    tests use it). A checkpoint in ``out`` written with the same arguments is continued.
    """
    if spec.kind != "generate":
        raise ValueError(f"{spec.name}: only a generating member can be specialised, not kind={spec.kind!r}")
    started_wall = time.perf_counter()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    _clean_temporaries(folder)
    cache = cache_dir if cache_dir is not None else config.resolved_cache_dir
    precision = resolve_precision(args.precision)

    checkpointing.seed_everything(args.seed)
    member = build_pool_member(spec, cache)
    fmt = PromptFormat.for_pool(member, config, stage=0)
    model, tokenizer = _trainable_model(spec, cache, args)
    examples, counts = build_examples(tokenizer, fmt, items, args.max_answer_tokens)
    if not examples:
        raise ValueError("no training examples left (every answer longer than max_answer_tokens?)")
    lengths = [len(ex.input_ids) for ex in examples]
    per_epoch = len(epoch_batches(lengths, args.batch_tokens, args.seed, 0))
    total = args.steps if args.steps is not None else max(1, math.ceil(args.epochs * per_epoch))
    schedule = train_schedule(lengths, args.batch_tokens, args.seed, total)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total, args.warmup_fraction))

    history: list[dict[str, float]] = []
    start, elapsed, resumes = 0, 0.0, []
    checkpoint = folder / CHECKPOINT_NAME
    if resume and checkpoint.is_file():
        state = _load_checkpoint(checkpoint, args, total)
        model.load_state_dict(state["adapter"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpointing.restore_rng_states(state["rng"])
        start, elapsed = int(state["step"]), float(state["elapsed_s"])
        history, resumes = list(state["history"]), [*state.get("resumes", []), int(state["step"])]

    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    device = next(model.parameters()).device
    model.train()
    bar = tqdm(total=total, initial=start, unit="step", desc=f"lora-{args.domain}", disable=not progress)
    step = start
    try:
        for step in range(start, total):
            if stop_after is not None and step >= stop_after:
                break
            began = time.perf_counter()
            batch = collate([examples[i] for i in schedule[step]], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = answer_loss(model, batch)
            loss.backward()
            if args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            lr = float(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - began
            elapsed += seconds
            row = {
                "step": step + 1,
                "loss": float(loss.detach()),
                "lr": lr,
                "tokens": int(batch["attention_mask"].sum()),
                "answer_tokens": int((batch["labels"] != -100).sum()),
                "seconds": seconds,
            }
            history.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens'] / seconds:.0f}", refresh=False)
            done = step + 1
            if done % args.checkpoint_every == 0 or done == total:
                checkpointing.save_checkpoint(
                    checkpoint,
                    {
                        "format": 1,
                        "step": done,
                        "total_steps": total,
                        "adapter": _trainable_state(model),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": checkpointing.rng_states(),
                        "args": args.as_dict(),
                        "history": history,
                        "elapsed_s": elapsed,
                        "resumes": resumes,
                    },
                )
                checkpointing.write_log(folder / LOG_NAME, LOG_COLUMNS, history)
        else:
            step = total
    finally:
        bar.close()

    finished = step >= total and len(history) == total
    result = SpecializeResult(folder, finished, len(history), total, start, history, model=model)
    if not finished:
        return result
    model.eval()
    result.card = specialist_card(
        spec, config, args, precision, counts, examples, per_epoch, total, history, elapsed, resumes, command
    )
    result.card["wall_s_this_process"] = round(time.perf_counter() - started_wall, 1)
    save_adapter(model, folder, result.card, spec.source)
    return result
