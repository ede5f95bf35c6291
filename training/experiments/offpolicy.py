"""Improve a router offline from logged, scored routes: a clipped importance-weighted surrogate.

Why this estimator: a served route was drawn by the logging policy μ, whose probability of each
action the route log keeps (``hierrouter_graph.serve.feedback``). For a new policy π_θ the
per-decision importance ratio ρ_t = π_θ(a_t|s_t)/μ(a_t|s_t) reweights the logged reward so its
mean estimates π_θ's (inverse propensity scoring). Unclipped, a few large ratios dominate and the
policy runs off where the log says nothing; PPO's clipped surrogate
    L(θ) = −E[min(ρ_t·A, clip(ρ_t, 1−ε, 1+ε)·A)] − c_ent·H(π_θ(·|s_t))
keeps every update within a trust region of μ, where the log is informative. A is the route's
reward R = score − α·C_L (the paper's reward with the client's score as Q), standardised over the
log (the mean is the baseline). Each logged route counts once per decision it made.

One screen per idea: ``LoggedBatch`` (the states, encoded once), ``improve`` (the epochs),
``provenance`` (what data a policy learned from, written into its policy.json).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from hierrouter_graph.policy.alpha import DEFAULT_ALPHA, serving_alpha
from hierrouter_graph.policy.encoder import SentenceEncoder
from hierrouter_graph.policy.router import RouterPolicy
from hierrouter_graph.policy.trained import TrainedPolicy, read_policy_meta
from hierrouter_graph.serve.feedback import FeedbackStore, LoggedRoute

__all__ = ["LoggedBatch", "OffPolicyArgs", "improve", "provenance", "retrain_from_log"]


@dataclass(frozen=True)
class OffPolicyArgs:
    """Hyperparameters of the offline update (defaults: PPO's clip, entropy and grad-norm)."""

    epochs: int = 200
    learning_rate: float = 1e-4
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    max_grad_norm: float = 0.3
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoggedBatch:
    """Every logged decision as tensors: the state, the action index, μ(a|s) and the advantage."""

    embeddings: torch.Tensor
    stages: torch.Tensor
    costs: torch.Tensor
    alphas: torch.Tensor
    actions: torch.Tensor
    logged_probs: torch.Tensor
    advantages: torch.Tensor

    @classmethod
    def of(cls, policy: TrainedPolicy, routes: Sequence[LoggedRoute], default_alpha: float) -> LoggedBatch:
        """Encode the logged states with ``policy``'s encoder; refuse actions outside its pool."""
        if not routes:
            raise ValueError("no scored routes in the log: nothing to learn from")
        actions = policy.actions
        rows, rewards = [], []
        for route in routes:
            alpha = default_alpha if route.alpha is None else route.alpha
            rewards.append(route.score - alpha * route.cost)
            for hop in route.hops:
                if hop.action not in actions:
                    raise ValueError(
                        f"route {route.completion_id}: action {hop.action!r} is not in the policy's "
                        f"actions {actions}"
                    )
                if not 0.0 < hop.prob <= 1.0:
                    raise ValueError(f"route {route.completion_id}: logged prob {hop.prob} is not in (0, 1]")
                rows.append((hop, len(rewards) - 1, alpha))
        reward = torch.tensor(rewards, dtype=torch.float32)
        standard = (reward - reward.mean()) / (reward.std(unbiased=False) + 1e-8)
        embeddings = policy.encoder.encode([hop.context for hop, _, _ in rows]).float()
        return cls(
            embeddings=embeddings,
            stages=torch.tensor([min(hop.stage, policy.horizon - 1) for hop, _, _ in rows]),
            costs=torch.tensor([hop.cost_before for hop, _, _ in rows], dtype=torch.float32),
            alphas=torch.tensor([alpha for _, _, alpha in rows], dtype=torch.float32),
            actions=torch.tensor([actions.index(hop.action) for hop, _, _ in rows]),
            logged_probs=torch.tensor([hop.prob for hop, _, _ in rows], dtype=torch.float32),
            advantages=standard[torch.tensor([index for _, index, _ in rows])],
        )


def improve(
    policy: RouterPolicy, batch: LoggedBatch, args: OffPolicyArgs
) -> tuple[RouterPolicy, list[dict[str, float]]]:
    """A copy of ``policy`` after ``args.epochs`` full-batch steps on the clipped surrogate, and
    one log row per epoch (loss, entropy, mean ratio, clipped fraction)."""
    torch.manual_seed(args.seed)
    new = RouterPolicy(policy.pool, **policy.shape())  # same shape and encoder (not deep-copied)
    new.load_state_dict(policy.state_dict())
    new.train()
    optimizer = torch.optim.Adam(new.parameters(), lr=args.learning_rate, eps=1e-4)
    alphas = batch.alphas if new.alpha_conditioned else None
    history: list[dict[str, float]] = []
    for _ in range(args.epochs):
        logits, _ = new(batch.embeddings, batch.stages, batch.costs, None, alphas)
        log_probs = torch.log_softmax(logits, dim=-1)
        ratio = log_probs.gather(1, batch.actions[:, None]).squeeze(1).exp() / batch.logged_probs
        clipped = ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)
        surrogate = torch.min(ratio * batch.advantages, clipped * batch.advantages).mean()
        entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
        loss = -surrogate - args.ent_coef * entropy
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(new.parameters(), args.max_grad_norm)
        optimizer.step()
        outside = ((ratio - 1).abs() > args.clip_coef).float().mean()
        history.append(
            {
                "loss": loss.item(),
                "entropy": entropy.item(),
                "ratio": ratio.mean().item(),
                "clipped": outside.item(),
            }
        )
    new.eval()
    return new, history


def provenance(db: Path, routes: Sequence[LoggedRoute]) -> dict[str, Any]:
    """What a policy learned from: the log file, its scored routes and decisions, their date range,
    and a sha256 over every (completion id, score, α, cost, hop) used — two policies trained on the
    same data carry the same hash."""
    digest = hashlib.sha256()
    for route in routes:
        hops = [[h.stage, h.action, h.prob, h.cost_before, h.hop_cost, h.context] for h in route.hops]
        digest.update(json.dumps([route.completion_id, route.score, route.alpha, route.cost, hops]).encode())
    created = [route.created for route in routes if math.isfinite(route.created)]

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")

    return {
        "db": str(db),
        "routes": len(routes),
        "decisions": sum(len(route.hops) for route in routes),
        "first": iso(min(created)) if created else None,
        "last": iso(max(created)) if created else None,
        "sha256": digest.hexdigest(),
    }


def retrain_from_log(
    db: Path,
    policy_dir: Path,
    out: Path,
    args: OffPolicyArgs,
    alpha: float | None = None,
    encoder: SentenceEncoder | None = None,
) -> tuple[Path, dict[str, object]]:
    """The new policy's folder and its ``training`` metadata."""
    if not db.is_file():
        raise FileNotFoundError(f"{db}: no route log there (hierrouter-serve --feedback-db writes one)")
    meta = read_policy_meta(policy_dir)
    policy = RouterPolicy.load(policy_dir, encoder=encoder)
    trained_alpha = float(alpha if alpha is not None else serving_alpha(DEFAULT_ALPHA, policy))
    store = FeedbackStore(db)
    try:
        routes = store.scored_routes()
    finally:
        store.close()
    new, history = improve(policy, LoggedBatch.of(policy, routes, trained_alpha), args)
    training = {
        **(meta.get("training") or {}),
        "algorithm": "offpolicy-clipped-ips",
        "started_from": str(policy_dir),
        "alpha": trained_alpha,
        "args": args.as_dict(),
        "final": history[-1],
        "feedback": provenance(db, routes),
    }
    folder = new.save(out, extra={"training": json.loads(json.dumps(training, default=str))})
    return folder, training
