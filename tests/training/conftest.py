"""Fixtures shared by the training tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from hierrouter_graph import RouterConfig
from hierrouter_graph.members.build import build_pool
from hierrouter_graph.members.pool import PoolMember
from tests.training.scripted_pool import chat_models, scripted_config


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """The test machine's 2 cores are shared: torch's 2 spinning threads then run ~10x slower, and
    one thread keeps encoder calls fast. Modules opt in with ``usefixtures``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def config() -> RouterConfig:
    """The scripted pool's router (planner, solver, guesser; L=2); a module may override it."""
    return scripted_config()


@pytest.fixture(scope="module")
def pool(config: RouterConfig) -> dict[str, PoolMember]:
    """The scripted pool's members on their scripted chat models; a module whose members answer
    differently (``test_evaluate``) overrides it."""
    return build_pool(config, chat_models())
