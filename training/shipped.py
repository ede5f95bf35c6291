"""The recorded outcome tree of the embedded offline pool, shipped inside the repo.

Generating the default pool's replies takes hours on a 2-core CPU, so they are recorded once
(``training/record.py``), exported as a small reproducible gzip JSONL, committed, and imported into
the local replay store on demand. With it, ``python training/ppo.py`` and
``python training/evaluate.py`` with no arguments replay instead of generating, and an
interrupted recording resumes on another machine from the committed pieces.
"""

from __future__ import annotations

from pathlib import Path

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.defaults import default_config
from training.replay import ReplayStore

__all__ = ["DEFAULT_PER_TASK", "SHIPPED_REPLAY", "export_shipped_replay", "import_shipped_replay"]

SHIPPED_REPLAY = Path(__file__).parent / "data" / "offline_pool.replay.jsonl.gz"
DEFAULT_PER_TASK = 100
"""Routing items per task recorded for the default pool (70 train / 30 test per task)."""


def _default_fingerprints(config: RouterConfig | None = None) -> list[str]:
    return [spec.fingerprint() for spec in (config or default_config()).models]


def import_shipped_replay(store: ReplayStore, path: Path = SHIPPED_REPLAY) -> int:
    """Add the shipped replies the store lacks (existing rows are kept); 0 when none is shipped."""
    if not path.is_file():
        return 0
    return store.import_jsonl_gz(path)


def export_shipped_replay(store: ReplayStore, path: Path = SHIPPED_REPLAY) -> int:
    """Write the default pool's replies from ``store`` to the shipped file (atomic, reproducible)."""
    return store.export_jsonl_gz(path, fingerprints=_default_fingerprints())
