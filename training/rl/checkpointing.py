"""A resumable training run's files: checkpoint, RNG state, resume check, per-iteration log.

Why one module: PPO (``training/ppo.py``) and the specialist trainer
(``training/specialists/specialize.py``) both promise that a run killed at any point and started
again with the same folder finishes bit-identical to an uninterrupted one. That takes the same
four pieces in both — an atomic checkpoint holding every RNG, a refusal to resume with other
settings, and a log rewritten from the checkpointed history — so they are written once, here.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

__all__ = [
    "TensorBoard",
    "atomic_write",
    "env_rng_state",
    "load_checkpoint",
    "restore_rng_states",
    "rng_states",
    "save_checkpoint",
    "seed_everything",
    "set_env_rng_state",
    "write_log",
]


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary sibling then ``os.replace``: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (a fresh run)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def env_rng_state(env: Any) -> dict[str, Any]:
    """A Gymnasium env's own generator state (item and α draws), for a checkpoint."""
    return dict(env.unwrapped.np_random.bit_generator.state)


def set_env_rng_state(env: Any, state: Mapping[str, Any]) -> None:
    """Put back what ``env_rng_state`` saved, so a resumed run draws the same items."""
    bit_generator = getattr(np.random, str(state["bit_generator"]))()
    bit_generator.state = dict(state)
    env.unwrapped.np_random = np.random.Generator(bit_generator)


def rng_states(**extra: Any) -> dict[str, Any]:
    """The global RNG states (torch, NumPy, Python) plus the run's own (``extra``), for a checkpoint."""
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    return {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "python": random.getstate(),
        **extra,
    }


def restore_rng_states(states: Mapping[str, Any]) -> None:
    """Put the global generators back where ``rng_states`` found them (the run's own are its job)."""
    torch.set_rng_state(states["torch"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy() if isinstance(keys, torch.Tensor) else keys, *rest))
    random.setstate(states["python"])


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` atomically: a kill at any moment leaves the previous checkpoint or the new one."""
    atomic_write(path, lambda tmp: torch.save(dict(state), tmp))


def load_checkpoint(
    path: Path,
    current: Mapping[str, Any],
    resumable: Iterable[str],
    *,
    advice: str,
    saved_defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint at ``path``, refused (``ValueError`` naming each setting) when its ``args``
    differ from ``current`` in anything but the ``resumable`` settings.

    ``saved_defaults`` fills settings that older checkpoints did not record; ``advice`` ends the
    message (how to start over instead).
    """
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    saved = {**dict(saved_defaults or {}), **dict(state["args"])}
    free = set(resumable)
    changed = sorted(k for k in set(saved) | set(current) if k not in free and saved.get(k) != current.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ValueError(
            f"{path} was written with different settings ({details}); resuming would not "
            f"reproduce the run — {advice}"
        )
    return state


def write_log(path: Path, columns: Sequence[str], history: Iterable[Mapping[str, float]]) -> None:
    """Rewrite the whole CSV from the checkpointed history, so a resumed run never duplicates rows."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns))
            writer.writeheader()
            for row in history:
                writer.writerow({key: row.get(key, float("nan")) for key in columns})

    atomic_write(path, write)


class TensorBoard:
    """SummaryWriter when ``tensorboard`` is installed; a no-op otherwise (it is optional)."""

    def __init__(self, run_dir: Path, enabled: bool, prefix: str, step_key: str) -> None:
        self.writer: Any = None
        self.prefix, self.step_key = prefix, step_key
        if enabled and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: Mapping[str, float], columns: Iterable[str]) -> None:
        if self.writer is None:
            return
        step = int(row[self.step_key])
        for key in columns:
            self.writer.add_scalar(f"{self.prefix}/{key}", row[key], step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
