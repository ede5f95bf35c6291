"""The registry of trained policy kinds (``dynamic.TRAINED_POLICY_KINDS``): one name per
kind, read from ``policy.json`` (a ``RouterPolicy``'s files carry none), the only dispatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hierrouter_graph import ModelSpec, RouterConfig
from hierrouter_graph.policy.dynamic import (
    TRAINED_POLICY_KINDS,
    DescriptorPolicy,
    load_saved_policy,
    saved_policy_kind,
)
from hierrouter_graph.policy.encoder import TextEncoder
from hierrouter_graph.policy.router import RouterPolicy
from hierrouter_graph.policy.signature import PolicyMismatchError
from hierrouter_graph.policy.trained import MLP_KIND
from training.rl.setup import POLICY_KINDS

SPECS = [
    ModelSpec(name="planner", source="fake:planner", base_rate=0.001, description="Plans."),
    ModelSpec(name="solver", source="fake:solver", base_rate=0.002, description="Solves."),
]


def test_the_registry_names_each_kind_once_and_training_offers_exactly_those() -> None:
    assert {"mlp": RouterPolicy, "descriptor": DescriptorPolicy} == TRAINED_POLICY_KINDS
    assert POLICY_KINDS == ("mlp", "descriptor")  # --policy-kind's choices, in this order
    assert MLP_KIND == RouterPolicy.KIND == "mlp"


def test_a_saved_folder_loads_as_its_kind_and_an_unknown_kind_names_the_file(
    encoder: TextEncoder, tmp_path: Path
) -> None:
    config = RouterConfig(models=SPECS, horizon=2)
    with torch.random.fork_rng(devices=[]):  # leave the global RNG as later tests expect it
        RouterPolicy.for_encoder(config.model_names, encoder, horizon=2).save(tmp_path / "mlp")
        DescriptorPolicy.for_encoder(SPECS, encoder, horizon=2).save(tmp_path / "descriptor")
    assert "kind" not in json.loads((tmp_path / "mlp" / "policy.json").read_text())  # format unchanged
    for kind, cls in TRAINED_POLICY_KINDS.items():
        assert saved_policy_kind(tmp_path / kind) == kind
        assert type(load_saved_policy(tmp_path / kind, config, encoder)) is cls

    with pytest.raises(
        PolicyMismatchError, match=r"descriptor/policy.json: a 'descriptor' policy, not a mlp"
    ):
        RouterPolicy.load(tmp_path / "descriptor")

    meta_path = tmp_path / "mlp" / "policy.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "kind": "transformer"}))
    with pytest.raises(
        PolicyMismatchError,
        match=r"mlp/policy.json: unknown policy kind 'transformer'; expected one of \['mlp', 'descriptor'\]",
    ):
        load_saved_policy(tmp_path / "mlp", config, encoder)
