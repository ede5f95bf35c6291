"""The paper's encoder, all-mpnet-base-v2 (768-d), assembled offline from its five wheels."""

from __future__ import annotations

from pathlib import Path

import pytest

from hierrouter_graph import HierRouterGraph, RouterConfig, RouterPolicy
from hierrouter_graph.policy.encoder import load_encoder

pytestmark = pytest.mark.integration


def test_paper_encoder_is_selectable(tiny_specs, tmp_path: Path) -> None:
    config = RouterConfig(models=tiny_specs, encoder="all-mpnet-base-v2", cache_dir=tmp_path)
    encoder = load_encoder(config.encoder, config.max_seq_len, cache_dir=config.resolved_cache_dir)
    assert encoder.dim == 768
    router = HierRouterGraph(config)  # default (untrained) policy sized for the configured encoder
    assert isinstance(router.policy, RouterPolicy) and router.policy.embedding_dim == 768
    assert len(router.invoke("What is seven times six?")["trace"]) == 2
