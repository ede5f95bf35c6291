"""The dynamic-pool experiment's set-up: a read-only snapshot of the store, and the two pools."""

from __future__ import annotations

from pathlib import Path

import pytest

from hierrouter_graph.defaults import default_config
from hierrouter_graph.hop import CachedReply
from training.experiments import dynamic_pool as experiment
from training.replay.store import ReplayStore


def test_copy_store_snapshots_without_touching_the_source(tmp_path: Path) -> None:
    source = tmp_path / "replay.sqlite"
    with ReplayStore(source) as store:
        store.put("fp", "prompt", CachedReply("reply", 3, 4))
    before = source.read_bytes()
    experiment.copy_store(source, tmp_path / "copy.sqlite")
    with ReplayStore(tmp_path / "copy.sqlite") as copy:
        assert copy.get("fp", "prompt") == CachedReply("reply", 3, 4)
        copy.put("fp", "other", CachedReply("x", 1, 1))  # writing the copy ...
    assert source.read_bytes() == before  # ... leaves the source as it was
    with ReplayStore(source) as store:
        assert store.get("fp", "other") is None


def test_pools_hold_one_member_out_and_keep_replay_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    full, held = experiment.experiment_configs("cloze-mc")
    assert full.model_names == default_config().model_names
    assert held.model_names == [n for n in full.model_names if n != "cloze-mc"]
    assert [s.fingerprint() for s in full.models] == [s.fingerprint() for s in default_config().models]
    with pytest.raises(ValueError, match="not in the default pool"):
        experiment.experiment_configs("gpt-5")

    # a held-out member without a description gets the fallback card; its replay key is unchanged
    bare = default_config()
    bare = bare.model_copy(update={"models": [s.model_copy(update={"description": ""}) for s in bare.models]})
    monkeypatch.setattr(experiment, "default_config", lambda: bare)
    full, _ = experiment.experiment_configs("cloze-mc")
    assert full.spec("cloze-mc").description == experiment.FALLBACK_CARDS["cloze-mc"]
    assert full.spec("cloze-mc").fingerprint() == bare.spec("cloze-mc").fingerprint()
    assert full.spec("smollm2-135m").description == ""  # only the held-out member is described
