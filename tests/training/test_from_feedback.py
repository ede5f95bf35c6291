"""Off-policy learning from a route log: a tiny policy over a two-member pool learns, from logged
routes alone, to prefer the member the feedback rewards; the new policy.json names its data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hierrouter_graph.policy.encoder import TextEncoder
from hierrouter_graph.policy.router import RouterPolicy
from hierrouter_graph.serve.feedback import FeedbackStore
from training.cli.from_feedback import main, retrain_from_log
from training.experiments.offpolicy import LoggedBatch, OffPolicyArgs, improve


def _log(store: FeedbackStore, policy: RouterPolicy, n: int) -> None:
    generator = torch.Generator().manual_seed(0)
    for i in range(n):
        decision = policy.decide(f"query {i}", 0, 0.0, sample=True, generator=generator)
        trace = [
            {
                "stage": 0,
                "model": decision.model,
                "prob": decision.prob,
                "reply": "r",
                "cost": 1.0,
                "cumulative_cost": 1.0,
            }
        ]
        store.log_route(f"c{i}", {"query": f"query {i}", "cost": 1.0, "trace": trace}, 0.005, created=i)
        store.add_feedback(completion_id=f"c{i}", score=1.0 if decision.model == "good" else 0.0)


def test_the_clipped_estimator_moves_probability_to_the_rewarded_member(tmp_path: Path, encoder: TextEncoder):
    policy = RouterPolicy.for_encoder(["bad", "good"], encoder, horizon=1, hidden_size=32)
    start = policy.save(tmp_path / "start")
    store = FeedbackStore(tmp_path / "log.sqlite")
    _log(store, policy, 40)
    routes = store.scored_routes()
    assert len(routes) == 40 and {r.score for r in routes} == {0.0, 1.0}
    batch = LoggedBatch.of(policy, routes, 0.005)
    assert batch.logged_probs.tolist() == pytest.approx([r.hops[0].prob for r in routes])
    new, history = improve(policy, batch, OffPolicyArgs(epochs=60, learning_rate=3e-3))
    assert len(history) == 60 and history[0]["ratio"] == pytest.approx(1.0, abs=1e-5)
    before = policy.decide("query 99", 0, 0.0).probs["good"]
    after = new.decide("query 99", 0, 0.0).probs["good"]
    assert after > before + 0.05
    assert max(h["ratio"] for h in history) < 1.5  # the clip keeps it near the logging policy

    folder, _ = retrain_from_log(
        tmp_path / "log.sqlite", start, tmp_path / "new", OffPolicyArgs(epochs=3), encoder=encoder
    )
    meta = json.loads((folder / "policy.json").read_text())
    feedback = meta["training"]["feedback"]
    assert feedback["db"] == str(tmp_path / "log.sqlite")
    assert (feedback["routes"], feedback["decisions"]) == (40, 40)
    assert (
        feedback["first"] == "1970-01-01T00:00:00+00:00" and feedback["last"] == "1970-01-01T00:00:39+00:00"
    )
    assert len(feedback["sha256"]) == 64 and meta["training"]["algorithm"] == "offpolicy-clipped-ips"


def test_a_missing_log_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.sqlite: no route log there"):
        main([str(tmp_path / "nope.sqlite")])


def test_a_logged_action_outside_the_pool_is_refused(tmp_path: Path, encoder: TextEncoder) -> None:
    policy = RouterPolicy.for_encoder(["a", "b"], encoder, horizon=1, hidden_size=8)
    store = FeedbackStore(tmp_path / "log.sqlite")
    trace = [{"stage": 0, "model": "z", "prob": 0.5, "reply": "r", "cost": 1.0, "cumulative_cost": 1.0}]
    store.log_route("c", {"query": "q", "cost": 1.0, "trace": trace}, 0.005)
    store.add_feedback(completion_id="c", score=0.5)
    with pytest.raises(ValueError, match=r"route c: action 'z' is not in the policy's actions \['a', 'b'\]"):
        LoggedBatch.of(policy, store.scored_routes(), 0.005)
