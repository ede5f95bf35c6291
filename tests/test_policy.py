from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hierrouter_graph import FixedRoutePolicy, PolicyMismatchError, RouterPolicy
from hierrouter_graph.policy.encoder import TextEncoder

POOL = ["small", "medium", "large"]


def test_untrained_policy_is_near_uniform(encoder: TextEncoder) -> None:
    policy = RouterPolicy.for_encoder(POOL, encoder, horizon=2)
    decision = policy.decide("What is 2 + 2?", 0, 0.0)
    assert set(decision.probs) == set(POOL)
    assert all(abs(p - 1 / 3) < 0.05 for p in decision.probs.values())
    assert decision.model == max(decision.probs, key=decision.probs.__getitem__)


def test_forward_shapes_and_inputs(encoder: TextEncoder) -> None:
    policy = RouterPolicy.for_encoder(POOL, encoder, horizon=3, hidden_size=32, stage_dim=4)
    embeddings = encoder.encode(["a", "b", "c", "d"])
    logits, value = policy(embeddings, torch.tensor([0, 1, 2, 0]), torch.tensor([0.0, 0.1, 0.2, 0.3]))
    assert logits.shape == (4, 3) and value.shape == (4,)
    assert policy.trunk[0].in_features == encoder.dim + 4 + 1  # embedding ⊕ stage ⊕ cost
    with pytest.raises(ValueError, match="stage out of range"):
        policy(embeddings[:1], torch.tensor([3]), torch.tensor([0.0]))


def test_stage_and_cost_change_the_decision_input(encoder: TextEncoder) -> None:
    policy = RouterPolicy.for_encoder(POOL, encoder, horizon=2)
    e = encoder.encode(["same context"])
    a = policy(e, torch.tensor([0]), torch.tensor([0.0]))[0]
    b = policy(e, torch.tensor([1]), torch.tensor([0.0]))[0]
    c = policy(e, torch.tensor([0]), torch.tensor([5.0]))[0]
    assert not torch.allclose(a, b) and not torch.allclose(a, c)


def test_sampling_is_seeded(encoder: TextEncoder) -> None:
    policy = RouterPolicy.for_encoder(POOL, encoder, horizon=2)

    def draws(seed: int) -> list[str]:
        gen = torch.Generator().manual_seed(seed)
        return [policy.decide("q", 0, 0.0, sample=True, generator=gen).model for _ in range(30)]

    assert draws(7) == draws(7)
    assert len(set(draws(7))) > 1  # near-uniform: sampling visits several models


def test_save_load_round_trip(tmp_path: Path, encoder: TextEncoder) -> None:
    policy = RouterPolicy.for_encoder(POOL, encoder, horizon=2, cost_scale=0.5)
    with torch.no_grad():
        policy.actor.bias.copy_(torch.tensor([0.0, 3.0, 0.0]))
    policy.save(tmp_path / "p", extra={"trained_on": "unit-test"})
    meta = json.loads((tmp_path / "p" / "policy.json").read_text())
    assert meta["pool"] == POOL and meta["encoder"] == {
        "name": encoder.name,
        "dim": encoder.dim,
        "max_seq_len": 512,
    }
    assert meta["horizon"] == 2 and meta["format_version"] == 1 and meta["trained_on"] == "unit-test"
    loaded = RouterPolicy.load(tmp_path / "p", pool=POOL, encoder=encoder, horizon=2)
    for key, tensor in policy.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key])
    assert loaded.decide("anything", 0, 0.0).model == "medium"
    assert not list((tmp_path / "p").glob(".*.tmp"))


def test_load_refuses_a_different_pool_encoder_or_horizon(tmp_path: Path, encoder: TextEncoder) -> None:
    RouterPolicy.for_encoder(POOL, encoder, horizon=2).save(tmp_path)
    with pytest.raises(PolicyMismatchError, match="pool"):
        RouterPolicy.load(tmp_path, pool=["small", "large", "medium"])
    with pytest.raises(PolicyMismatchError, match="pool"):
        RouterPolicy.load(tmp_path, pool=["small", "medium"])
    with pytest.raises(PolicyMismatchError, match="encoder"):
        RouterPolicy.load(tmp_path, encoder="all-mpnet-base-v2")
    with pytest.raises(PolicyMismatchError, match="horizon"):
        RouterPolicy.load(tmp_path, horizon=3)
    with pytest.raises(FileNotFoundError, match="no policy"):
        RouterPolicy.load(tmp_path / "missing")
    meta = json.loads((tmp_path / "policy.json").read_text())
    (tmp_path / "policy.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(PolicyMismatchError, match="format_version"):
        RouterPolicy.load(tmp_path)


def test_fixed_route_policy_repeats_its_last_model() -> None:
    policy = FixedRoutePolicy(POOL, ["large", "small"])
    assert [policy.decide("q", s, 0.0).model for s in range(3)] == ["large", "small", "small"]
    assert policy.decide("q", 0, 0.0).probs == {"small": 0.0, "medium": 0.0, "large": 1.0}
    with pytest.raises(ValueError, match="at least one"):
        FixedRoutePolicy(POOL, [])
