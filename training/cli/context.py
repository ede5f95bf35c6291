"""The objects every training command builds from its flags: ``load_run_context(args)``.

Why one function: PPO, the evaluation, the sweep and the tuner all read the same flags
(``--config``, ``--horizon``, ``--allow-stop``, ``--uncertainty``, ``--replay``, ``--live``, ``--tasks``,
``--per-task``, ``--data-seed``, ``--items``, ``--threads``) into the same objects; building them in
one place keeps the commands from drifting apart (which config a flag changes, when the shipped
record seeds the store, which split is train).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.members.pool import PoolMember
from training.replay.readers import CachedEncoder, ReplayMissError
from training.replay.shipped import ShippedRecord, note_replayed_numerics, shipped_record_for
from training.replay.store import ReplayStore, StateEncoder
from training.replay.tree import with_horizon
from training.tasks.items import ALL_TASKS, DEFAULT_PER_TASK, Item
from training.tasks.reward import REWARD_METRICS
from training.tasks.routing_data import build_routing_dataset, load_items

__all__ = [
    "RunContext",
    "add_data_flags",
    "add_horizon_flag",
    "add_router_flags",
    "evaluation_splits",
    "load_config",
    "load_run_context",
]


def add_horizon_flag(parser: argparse.ArgumentParser) -> None:
    """``--horizon L``: the config answering in L hops (``tree.with_horizon``). Why a flag and not a
    copy of the YAML: a pool recorded to one hop (``record.py --horizon 1``) is trained, tuned and
    evaluated at that horizon with the same config file, so fingerprints and replay keys stay one."""
    parser.add_argument(
        "--horizon",
        type=int,
        default=None,
        help="hops per route instead of the config's L (deeper stages reuse the last stage prompt)",
    )


def add_router_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that say which router and which replies: config and its horizon, its
    STOP/confidence switches, the replay store, live generation and the reward's quality metric."""
    parser.add_argument("--config", type=Path, default=None, help="router YAML/JSON (default: offline pool)")
    add_horizon_flag(parser)
    parser.add_argument("--replay", type=Path, default=Path("runs/replay.sqlite"), help="replay store")
    parser.add_argument(
        "--live",
        action="store_true",
        help="generate hops missing from the replay store (and record them); default: replay only",
    )
    parser.add_argument("--reward", choices=REWARD_METRICS, default="task")
    parser.add_argument(
        "--allow-stop",
        action="store_true",
        help="the router has a STOP action (RouterConfig.allow_stop) on top of the config",
    )
    parser.add_argument(
        "--uncertainty",
        action="store_true",
        help="the router reads the last reply's confidence (RouterConfig.uncertainty_state)",
    )
    parser.add_argument(
        "--alpha-range",
        nargs=2,
        type=float,
        default=None,
        metavar=("LO", "HI"),
        help="train ONE α-conditioned policy for every α in [LO, HI] (RouterConfig.alpha_range); "
        "the config's alpha must lie inside",
    )


def add_data_flags(parser: argparse.ArgumentParser, *, items_help: str) -> None:
    """The flags that say which items (benchmarks split by ``--data-seed``, or a JSONL file) and how
    the run uses the machine."""
    parser.add_argument("--tasks", nargs="+", default=list(ALL_TASKS), choices=ALL_TASKS)
    parser.add_argument(
        "--per-task",
        type=int,
        default=DEFAULT_PER_TASK,
        help="routing items per task (70%% train / 30%% test; shipped: 100)",
    )
    parser.add_argument("--data-seed", type=int, default=42, help="seed of the train/test split")
    parser.add_argument("--items", type=Path, default=None, help=items_help)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true")


def load_config(ns: argparse.Namespace) -> RouterConfig:
    """``--config`` (default: the offline pool), with ``--horizon`` / ``--allow-stop`` /
    ``--uncertainty`` / ``--alpha-range`` on top."""
    from hierrouter_graph.defaults import default_config

    config = RouterConfig.from_file(ns.config) if ns.config is not None else default_config()
    if getattr(ns, "horizon", None) is not None:
        if ns.horizon < 1:
            raise ValueError(f"--horizon: expected >= 1 hops, got {ns.horizon}")
        config = with_horizon(config, ns.horizon)
    if getattr(ns, "allow_stop", False):
        config = config.model_copy(update={"allow_stop": True})
    if getattr(ns, "uncertainty", False):
        config = config.model_copy(update={"uncertainty_state": True})
    if getattr(ns, "alpha_range", None) is not None:  # validated: the config's α must lie inside
        config = RouterConfig.model_validate({**config.model_dump(), "alpha_range": tuple(ns.alpha_range)})
    return config


def evaluation_splits(ns: argparse.Namespace) -> tuple[list[Item], list[Item], dict[str, Any]]:
    """(train, test, description): ``load_items`` for train, the same split's other half for test;
    with ``--items`` (TEST items) and ``--train-items``, those files."""
    if getattr(ns, "items", None) is not None:
        test, info = load_items(items_path=ns.items)
        train_path = getattr(ns, "train_items", None)
        train = load_items(items_path=train_path)[0] if train_path is not None else []
        return train, test, {**info, "train_path": str(train_path) if train_path else None}
    train, info = load_items(tasks=ns.tasks, per_task=ns.per_task, data_seed=ns.data_seed)
    test = build_routing_dataset(ns.tasks, per_task=ns.per_task, seed=ns.data_seed).test
    if not test:
        raise ValueError(
            f"the test split of {ns.tasks} at --per-task {ns.per_task} is empty; raise --per-task"
        )
    described = {k: v for k, v in info.items() if k != "items"}
    return train, test, {**described, "train_items": len(train), "test_items": len(test)}


@dataclass
class RunContext:
    """A command's config, pool, items, replay store and (loaded on first use) sentence encoder."""

    config: RouterConfig
    pool: dict[str, PoolMember]
    train: list[Item]
    test: list[Item]
    data_info: dict[str, Any]
    replay: Path
    shipped: ShippedRecord | None
    """The shipped record that seeds the store (``shipped_record_for``: a shipped pool on the
    benchmarks), or None."""
    given_encoder: StateEncoder | None = None
    _encoder: StateEncoder | None = field(default=None, repr=False)

    def encoder(self) -> StateEncoder:
        """The config's sentence encoder (the given one in tests), loaded once."""
        if self._encoder is None:
            from hierrouter_graph.policy.encoder import load_encoder

            config = self.config
            self._encoder = self.given_encoder or load_encoder(
                config.encoder, config.max_seq_len, cache_dir=config.resolved_cache_dir
            )
        return self._encoder

    def state_encoder(self, store: ReplayStore) -> CachedEncoder:
        """The encoder behind the store's embedding cache (recorded states are looked up)."""
        return CachedEncoder(self.encoder(), store)

    def open_store(self) -> ReplayStore:
        """The replay store, seeded with the shipped record when it applies (a context manager)."""
        store = ReplayStore(self.replay)
        if self.shipped is not None:
            self.shipped.import_into(store)  # the pool's recorded outcome tree (and its states)
            note_replayed_numerics(self.shipped, self.config)
        return store


def load_run_context(
    ns: argparse.Namespace,
    *,
    split: str = "train",
    chat_models: Mapping[str, Any] | None = None,
    encoder: StateEncoder | None = None,
    require_replay: bool = False,
    items: Sequence[Item] | None = None,
    shipped: bool | None = None,
    generates: bool = False,
) -> RunContext:
    """Config, items, pool and replay store of a command (``chat_models``/``encoder``: tests' own).

    ``split="train"``: the training items (``load_items``); ``"evaluation"``: train and test
    (``evaluation_splits``); ``items``: the command's own choice instead (``record.py --split``).
    Flags a command does not have take ``load_items``'s defaults. ``shipped``: whether a shipped
    record that fits the config seeds the store (default: on the benchmarks, not on ``--items``).
    ``require_replay``: replay-only (no ``--live``) needs the store to exist unless a shipped record
    seeds it — say so before building the pool. The pool's weights are loaded only when the
    command can generate (``--live``, or ``generates`` for ``record.py``): replay needs the
    tokenizers alone (``hierrouter_graph.members.replay``).
    """
    from hierrouter_graph.members.build import build_pool

    if getattr(ns, "threads", None) is not None:
        import torch

        torch.set_num_threads(ns.threads)
    config = load_config(ns)
    test: list[Item] = []
    if items is not None:
        train, info = list(items), {"items": len(items)}
    elif split == "evaluation":
        train, test, info = evaluation_splits(ns)
    else:
        train, info = load_items(
            items_path=getattr(ns, "items", None),
            tasks=getattr(ns, "tasks", ALL_TASKS),
            per_task=getattr(ns, "per_task", DEFAULT_PER_TASK),
            data_seed=getattr(ns, "data_seed", 42),
        )
    if shipped is None:
        shipped = getattr(ns, "items", None) is None
    record = shipped_record_for(config) if shipped else None
    live = bool(getattr(ns, "live", False))
    if require_replay and not live and record is None and not ns.replay.is_file():
        raise ReplayMissError(
            f"no replay store at {ns.replay}: record it with training/record.py, or pass --live"
        )
    pool = build_pool(config, chat_models, weights=live or generates)
    return RunContext(config, pool, train, test, info, ns.replay, record, encoder)
