"""How close a backfilled confidence is to the one generation recorded, on real SmolLM2/Gemma replies.

``training/backfill_confidence.py`` recomputes the confidence of an old reply with one
teacher-forced forward over its re-tokenized text. This bench takes replies whose confidence was
recorded DURING generation (``source='generation'`` in the replay store), recomputes it the
backfill way, and prints the agreement and the forward-pass cost, measured in one run.

    python bench/confidence_backfill.py --db runs/replay.sqlite --per-member 48 --threads 1
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import time
from pathlib import Path

import torch

from hierrouter_graph.defaults import default_config
from hierrouter_graph.hop import CachedReply, messages_from_cache_key
from hierrouter_graph.members.build import build_pool
from training.replay.backfill_confidence import teacher_forced_confidences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=Path("runs/replay.sqlite"))
    parser.add_argument("--per-member", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    ns = parser.parse_args()
    if ns.threads:
        torch.set_num_threads(ns.threads)
    config = default_config()
    pool = build_pool(config)
    conn = sqlite3.connect(f"file:{ns.db}?mode=ro", uri=True)
    print(
        f"{'member':<20} {'n':>4} {'|Δ logprob| median':>19} {'max':>8} {'|Δ entropy| median':>19} "
        f"{'within 0.01':>11} {'ms/reply':>9}"
    )
    for spec in config.models:
        if spec.kind != "generate":
            continue
        member = pool[spec.name]
        rows = conn.execute(
            "SELECT r.prompt, r.reply, r.tokens_in, r.tokens_out, c.mean_logprob, c.mean_entropy "
            "FROM replies r JOIN confidences c USING (fingerprint, prompt_sha) "
            "WHERE r.fingerprint=? AND c.source='generation' ORDER BY r.prompt_sha LIMIT ?",
            (member.fingerprint, ns.per_member),
        ).fetchall()
        if not rows:
            print(f"{spec.name:<20} no replies with a generation-time confidence in {ns.db}")
            continue
        d_lp, d_h, seconds = [], [], 0.0
        for start in range(0, len(rows), ns.batch_size):
            chunk = rows[start : start + ns.batch_size]
            began = time.perf_counter()
            got = teacher_forced_confidences(
                member.batch_generate,
                [messages_from_cache_key(r[0]) for r in chunk],
                [CachedReply(r[1], r[2], r[3]) for r in chunk],
                spec.max_new_tokens,
            )
            seconds += time.perf_counter() - began
            for row, confidence in zip(chunk, got, strict=True):
                if confidence is None:
                    continue
                d_lp.append(abs(confidence.mean_logprob - row[4]))
                d_h.append(abs(confidence.mean_entropy - row[5]))
        close = sum(a < 0.01 and b < 0.01 for a, b in zip(d_lp, d_h, strict=True)) / len(d_lp)
        print(
            f"{spec.name:<20} {len(d_lp):>4} {statistics.median(d_lp):>19.5f} {max(d_lp):>8.3f} "
            f"{statistics.median(d_h):>19.5f} {close:>11.0%} {1000 * seconds / len(rows):>9.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
