"""One setting of the grid (``Setting``: L, α, STOP, confidence), the router config it means
(``setting_config``) and the one PPO run that trains it (``train_setting``).

Why apart from the sweep (``sweep.py``): the curve study trains "the policy at this α" too, and
the sweep is only one grid of such settings; both take ``train_setting``, so a setting is trained
the same way whoever asks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.policy.router import RouterPolicy
from training.replay.readers import CachedEncoder, ReplayOnlyCache
from training.replay.store import ReplayStore, StateEncoder
from training.replay.tree import with_horizon
from training.rl.args import PPOArgs
from training.rl.train import train_router
from training.tasks.items import Item
from training.tasks.reward import ScoreMemo

__all__ = [
    "Setting",
    "setting_config",
    "settings_grid",
    "train_setting",
]


@dataclass(frozen=True, order=True)
class Setting:
    """One point of the grid: horizon L, cost weight α, whether the router may STOP, and whether
    it reads the last reply's confidence (``RouterConfig.uncertainty_state``)."""

    horizon: int
    allow_stop: bool
    alpha: float
    uncertainty: bool = False

    @property
    def name(self) -> str:
        """Run-dir name, e.g. ``L2-a0.005-stop`` or ``L2-a0.005-conf``."""
        return (
            f"L{self.horizon}-a{self.alpha:g}"
            + ("-stop" if self.allow_stop else "")
            + ("-conf" if self.uncertainty else "")
        )

    @property
    def family(self) -> str:
        """The α sweep this setting belongs to: ``L=2``, ``L=2 + STOP`` or ``L=2 + confidence``."""
        return (
            f"L={self.horizon}"
            + (" + STOP" if self.allow_stop else "")
            + (" + confidence" if self.uncertainty else "")
        )


def settings_grid(
    horizons: Sequence[int],
    alphas: Sequence[float],
    stop_horizons: Sequence[int],
    uncertainty_horizons: Sequence[int] = (),
) -> list[Setting]:
    """Every (L, α) without STOP, plus (L, α) with STOP for L in ``stop_horizons`` and with the
    confidence in the state for L in ``uncertainty_horizons`` (L ≥ 2 only for both: at L = 1 the
    only decision is the first, before any reply, so STOP is not allowed and there is no
    confidence to read: it would be a copy)."""
    grid = {Setting(h, False, float(a)) for h in horizons for a in alphas}
    grid |= {Setting(h, True, float(a)) for h in stop_horizons if h >= 2 for a in alphas}
    grid |= {Setting(h, False, float(a), True) for h in uncertainty_horizons if h >= 2 for a in alphas}
    return sorted(grid)


def setting_config(base: RouterConfig, setting: Setting) -> RouterConfig:
    """``base`` at this setting's L (``tree.with_horizon``: deeper stages reuse the last prompt),
    α and STOP."""
    deeper = with_horizon(base, setting.horizon)
    return deeper.model_copy(
        update={
            "alpha": setting.alpha,
            "allow_stop": setting.allow_stop,
            "uncertainty_state": setting.uncertainty,
        }
    )


def train_setting(
    setting: Setting,
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    train_items: Sequence[Item],
    store: ReplayStore,
    encoder: StateEncoder,
    args: PPOArgs,
    run_dir: Path,
    *,
    live: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = print,
    memo: ScoreMemo | None = None,
) -> tuple[RouterPolicy, float, Path]:
    """Train one setting with PPO in ``run_dir/setting.name`` (resuming a finished or interrupted
    run on the same train items) and load the policy back with the store's cached encoder.

    ``config`` is ``setting_config(base, setting)``; ``encoder`` the state encoder (wrapped in the
    store's ``CachedEncoder`` unless it is one, so one cache can serve many runs). Returns
    (policy, seconds, the run dir). Why a function: the sweep, the cost–quality curves
    (``training/curves.py``: one PPO run per α and seed) and anything else that needs "the policy
    trained at this α" share one training path. ``memo``: scores already computed (e.g. while
    replaying the train tree) handed to the environment, so its episodes never score an answer
    twice across runs — MBPP answers run in the sandbox, which otherwise dominates a replay run.
    """
    cached = encoder if isinstance(encoder, CachedEncoder) else CachedEncoder(encoder, store)
    log(f"{setting.name}: training on {len(train_items)} train items …")
    began = time.perf_counter()
    cache = store if live else ReplayOnlyCache(store)
    # Q depends on neither α nor the policy: one memo is right for every run
    folder = run_dir / setting.name
    resume = _same_train_items(folder, train_items, log)
    trained = train_router(
        config,
        train_items,
        pool,
        cached,
        args,
        folder,
        cache=cache,
        policy_encoder=encoder,
        memo=memo,
        progress=progress,
        resume=resume,
        metadata={"sweep": setting.name},
    )
    seconds = time.perf_counter() - began
    policy = RouterPolicy.load(
        trained.policy_dir,
        pool=config.model_names,
        encoder=cached,  # the evaluation's states are read back from the store too
        horizon=setting.horizon,
        allow_stop=setting.allow_stop,
        uncertainty_state=setting.uncertainty,
    )
    return policy, seconds, trained.run_dir


def _same_train_items(folder: Path, items: Sequence[Item], log: Callable[[str], None]) -> bool:
    """Record the train item ids in ``folder``; False (train from scratch) when they changed.

    Why: a PPO checkpoint only remembers its hyperparameters, and a sweep rerun after more of the
    tree was recorded trains on more items — resuming the old run would silently report a policy
    trained on the old items.
    """
    ids = [item.id for item in items]
    marker = folder / "train_items.json"
    same = not marker.is_file() or json.loads(marker.read_text()) == ids
    if not same:
        log(f"{folder.name}: the recorded train items changed since the last run; training from scratch")
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(ids) + "\n")
    return same
