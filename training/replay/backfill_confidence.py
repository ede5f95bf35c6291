"""Give recorded replies their confidence: one teacher-forced forward per reply, no regeneration.

Replies recorded before the replay store kept confidences (``hierrouter_graph/confidence.py``) have
none, and an ``uncertainty_state`` router needs them at every decision. Regenerating would cost
hours; instead each recorded reply is fed back with its prompt and the two numbers are computed
from that one forward pass, exactly as generation computes them: the log-probability of each reply
token and the entropy at each step, plus the stop token when the reply ended before
``max_new_tokens`` (greedy chose it, so it is the most likely of the stop tokens there). For a
greedy reply this equals what generation records (``tests/test_confidence.py`` checks it on the
tiny models), up to the reply's text tokenizing back to the ids that were generated. Rows are
marked ``source='teacher_forced'``. The cloze specialist simply re-scores its options (the same
computation as its reply).

Only the replies a router READS need it: the hops before a decision, i.e. stages 0 … L−2 (the
last stage's reply is scored, never decided on). ``--stages all`` does every reply.

    python training/backfill_confidence.py --db runs/replay.sqlite --threads 1
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from langchain_core.messages import BaseMessage
from tqdm import tqdm

from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.confidence import Confidence
from hierrouter_graph.config import RouterConfig
from hierrouter_graph.defaults import default_config
from hierrouter_graph.hop import CONTEXT_SEPARATOR, CachedReply, messages_from_cache_key
from hierrouter_graph.members.build import build_pool
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.sandbox import SandboxUnavailable
from training.replay.store import ReplayStore

__all__ = ["backfill", "teacher_forced_confidences"]


def _stage_and_context(key: str, config: RouterConfig) -> tuple[int | None, str]:
    """Which stage's instruction opens the key's user message (None: not one of this config's), and
    the context after it."""
    user = str(messages_from_cache_key(key)[-1].content)
    for stage in range(config.horizon):
        head = config.stage_prompt(stage) + CONTEXT_SEPARATOR
        if user.startswith(head):
            return stage, user[len(head) :]
    return None, user


def teacher_forced_confidences(
    generator: Any, prompts: Sequence[list[BaseMessage]], replies: Sequence[CachedReply], max_new_tokens: int
) -> list[Confidence | None]:
    """Confidences of recorded greedy replies from one left-padded forward (a ``BatchGenerator``'s
    model, tokenizer and generate kwargs: the same model, adapter view and suppressed tokens)."""
    kwargs = generator.generate_kwargs
    if kwargs.get("do_sample"):
        raise ValueError("teacher forcing reproduces greedy decoding only; this member samples")
    stops = kwargs.get("eos_token_id") or []
    stops = [stops] if isinstance(stops, int) else list(stops)
    rows, spans = [], []
    for messages, reply in zip(prompts, replies, strict=True):
        prompt_ids = list(generator.tokenizer(generator.counter.render_prompt(messages))["input_ids"])
        reply_ids = list(generator.tokenizer(reply.reply, add_special_tokens=False)["input_ids"])
        stopped = len(reply_ids) < max_new_tokens and bool(stops)
        rows.append(prompt_ids + reply_ids)
        spans.append((len(reply_ids), stopped))
    batch = generator.left_padded(rows)
    mask = batch["attention_mask"]
    keep = max(n for n, _ in spans) + 1
    with torch.inference_mode():
        logits = generator.model(
            **batch, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), logits_to_keep=keep
        ).logits.float()
    logits = logits.clone()
    suppress = kwargs.get("suppress_tokens") or []
    if suppress:
        logits[..., suppress] = -math.inf
    logprobs = torch.log_softmax(logits, dim=-1)
    probs = logprobs.exp()
    entropy = -(probs * torch.where(probs > 0, logprobs, torch.zeros_like(logprobs))).sum(-1)
    out: list[Confidence | None] = []
    for row, (n, stopped) in enumerate(spans):
        # position keep-1 is the last token; the logits predicting reply token j sit at keep-1-n+j
        first = keep - 1 - n
        targets = torch.tensor(rows[row][len(rows[row]) - n :], dtype=torch.long)
        token_lp = logprobs[row, first : first + n].gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        steps_lp, steps_h = list(token_lp.tolist()), list(entropy[row, first : first + n].tolist())
        if stopped:  # greedy picked the stop token: the most likely of them at the last position
            steps_lp.append(float(logprobs[row, keep - 1, stops].max()))
            steps_h.append(float(entropy[row, keep - 1]))
        if not steps_lp:  # an empty reply cut at 0 tokens: nothing was decoded
            out.append(None)
            continue
        out.append(Confidence(min(sum(steps_lp) / len(steps_lp), 0.0), max(sum(steps_h) / len(steps_h), 0.0)))
    return out


def _cloze_confidences(member: PoolMember, keys: Sequence[str]) -> list[Confidence | None]:
    """The cloze specialist's confidence is its option distribution: score the options again."""
    out = []
    for key in keys:
        message = member.chat_model.invoke(messages_from_cache_key(key))
        out.append(Confidence.from_any(message.response_metadata.get("confidence")))
    return out


def backfill(
    store: ReplayStore,
    config: RouterConfig,
    pool: dict[str, PoolMember],
    *,
    stages: str = "decision",
    queries: Sequence[str] | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, int]:
    """Add confidences to ``store``'s replies of ``config``'s local members; returns rows added per member.

    ``queries``: only replies in the trees of these queries (their context starts with one), so a
    store that also holds other datasets' replies costs only what the training run will read.
    """
    wanted = set(range(config.horizon - 1)) if stages == "decision" else set(range(config.horizon))
    roots = tuple(queries) if queries is not None else None

    def needed(key: str) -> bool:
        stage, context = _stage_and_context(key, config)
        return stage in wanted and (roots is None or context.startswith(roots))

    added: dict[str, int] = {}
    for spec in config.models:
        member = pool[spec.name]
        todo = [
            (key, reply) for key, reply in store.replies_without_confidence(member.fingerprint) if needed(key)
        ]
        todo.sort(key=lambda row: len(row[0]) + len(row[1].reply))  # similar lengths share a forward
        added[spec.name] = 0
        if not todo:
            continue
        with tqdm(
            total=len(todo), desc=f"confidence · {spec.name}", unit="reply", disable=not progress
        ) as bar:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                keys = [key for key, _ in chunk]
                if spec.kind == "cloze_mc":
                    found: Sequence[Confidence | None] = _cloze_confidences(member, keys)
                    source = "generation"
                elif member.batch_generate is not None and spec.endpoint is None and spec.kind != "program":
                    found = teacher_forced_confidences(
                        member.batch_generate,
                        [messages_from_cache_key(k) for k in keys],
                        [reply for _, reply in chunk],
                        spec.max_new_tokens,
                    )
                    source = "teacher_forced"
                else:
                    bar.update(len(chunk))
                    continue  # an endpoint, user chat model or program run (not the model's own text)
                rows = [(member.fingerprint, k, c, source) for k, c in zip(keys, found, strict=True) if c]
                added[spec.name] += store.put_confidences(rows)
                bar.update(len(chunk))
    return added


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=None, help="router YAML/JSON (default: offline pool)")
    parser.add_argument("--db", type=Path, default=Path("runs/replay.sqlite"))
    parser.add_argument("--stages", choices=("decision", "all"), default="decision")
    parser.add_argument(
        "--per-task",
        type=int,
        default=None,
        help="only the trees of the routing dataset with this many items per task (train + test, as "
        "record.py samples them); default: every reply in the store",
    )
    parser.add_argument("--seed", type=int, default=42, help="the routing dataset's seed (with --per-task)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    ns = parser.parse_args(argv)
    if ns.threads:
        torch.set_num_threads(ns.threads)
    config = RouterConfig.from_file(ns.config) if ns.config else default_config()
    with ReplayStore(ns.db) as store:
        added = backfill(
            store,
            config,
            build_pool(config),
            stages=ns.stages,
            batch_size=ns.batch_size,
            progress=not ns.no_progress,
        )
    print("confidences added: " + ", ".join(f"{name} {n}" for name, n in added.items()))
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(SandboxUnavailable,))


if __name__ == "__main__":
    raise SystemExit(cli())
