"""Shipped records: found by the config they fit, their state embeddings' float16 round trip,
refusals, and the real shipped files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import CachedReply
from training.replay.shipped import (
    ShippedFileError,
    ShippedRecord,
    default_shipped_record,
    export_shipped_embeddings,
    import_shipped_embeddings,
    shipped_record_for,
    shipped_records,
)
from training.replay.store import ReplayStore, text_sha

TEXTS = ["What is 2 + 2?", "What is 2 + 2?\n\nPlan: add.", "Which letter? A) x B) y"]


def _store_with_vectors(path: Path) -> tuple[ReplayStore, torch.Tensor]:
    store = ReplayStore(path)
    vectors = torch.randn(len(TEXTS), 8, generator=torch.Generator().manual_seed(0))
    store.put_embeddings("enc", TEXTS, vectors)
    return store, vectors


def test_embeddings_round_trip_as_float16_and_never_overwrite(tmp_path: Path) -> None:
    source, vectors = _store_with_vectors(tmp_path / "a.sqlite")
    target_file = tmp_path / "states.safetensors"
    assert export_shipped_embeddings(source, [*TEXTS, TEXTS[0]], "enc", target_file) == 3
    first = target_file.read_bytes()
    assert export_shipped_embeddings(source, reversed(TEXTS), "enc", target_file) == 3
    assert target_file.read_bytes() == first  # sorted by sha: reproducible whatever the order

    target = ReplayStore(tmp_path / "b.sqlite")
    kept = torch.full((1, 8), 7.0)
    target.put_embeddings("enc", TEXTS[:1], kept)
    assert import_shipped_embeddings(target, target_file) == 2  # the existing row is kept
    assert import_shipped_embeddings(target, target_file) == 0
    found = target.get_embeddings("enc", TEXTS)
    assert torch.equal(found[TEXTS[0]], kept[0])
    for i in (1, 2):
        assert torch.equal(found[TEXTS[i]], vectors[i].to(torch.float16).float())
    assert target.get_embeddings("other-encoder", TEXTS) == {}


def test_export_refuses_texts_the_store_never_encoded(tmp_path: Path) -> None:
    source, _ = _store_with_vectors(tmp_path / "a.sqlite")
    with pytest.raises(ValueError, match="1 of 4 texts have no 'enc' embedding"):
        export_shipped_embeddings(source, [*TEXTS, "never encoded"], "enc", tmp_path / "s.safetensors")
    assert not (tmp_path / "s.safetensors").exists()


def test_import_names_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    store = ReplayStore(tmp_path / "a.sqlite")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ShippedFileError, match="garbage.safetensors: not a readable safetensors file"):
        import_shipped_embeddings(store, garbage)
    no_encoder = tmp_path / "no_encoder.safetensors"
    save_file(
        {"text_sha256": torch.zeros(1, 32, dtype=torch.uint8), "vectors": torch.zeros(1, 4)}, no_encoder
    )
    with pytest.raises(ShippedFileError, match="no_encoder.safetensors: metadata field 'encoder' is missing"):
        import_shipped_embeddings(store, no_encoder)
    short_sha = tmp_path / "short.safetensors"
    save_file(
        {"text_sha256": torch.zeros(1, 16, dtype=torch.uint8), "vectors": torch.zeros(1, 4)},
        short_sha,
        metadata={"encoder": "enc"},
    )
    with pytest.raises(ShippedFileError, match=r"'text_sha256' must be uint8 \[n, 32\]"):
        import_shipped_embeddings(store, short_sha)
    mismatched = tmp_path / "mismatched.safetensors"
    save_file(
        {"text_sha256": torch.zeros(2, 32, dtype=torch.uint8), "vectors": torch.zeros(1, 4)},
        mismatched,
        metadata={"encoder": "enc"},
    )
    with pytest.raises(ShippedFileError, match=r"'vectors' must be \[2, dim\]"):
        import_shipped_embeddings(store, mismatched)
    assert import_shipped_embeddings(store, tmp_path / "absent.safetensors") == 0
    assert ShippedRecord("absent", tmp_path).import_into(store) == 0


def test_the_shipped_file_covers_every_test_prompt_for_the_default_encoder(tmp_path: Path) -> None:
    """Every test query's first state is shipped, so evaluating the default policy encodes nothing
    at depth 0 (deeper states are covered for the items whose tree is complete)."""
    from hierrouter_graph.defaults import default_config
    from training.tasks.items import ALL_TASKS, DEFAULT_PER_TASK
    from training.tasks.routing_data import build_routing_dataset

    store = ReplayStore(tmp_path / "shipped.sqlite")
    added = import_shipped_embeddings(store, default_shipped_record().embeddings)
    assert added > 0
    test = build_routing_dataset(ALL_TASKS, per_task=DEFAULT_PER_TASK, seed=42).test
    found = store.get_embedding_rows(default_config().encoder, [text_sha(item.prompt) for item in test])
    assert len(found) == len(test)
    assert {vector.shape[0] for vector in found.values()} == {384}


def _write_record(folder: Path, name: str, config: RouterConfig, rows: int = 1) -> ShippedRecord:
    record = ShippedRecord(name, folder)
    meta = {
        "members": {
            spec.name: {"fingerprint": spec.fingerprint(), "backend": "test"} for spec in config.models
        },
        "stage_prompts": [config.stage_prompt(stage) for stage in range(config.horizon)],
    }
    folder.mkdir(parents=True, exist_ok=True)
    record.meta.write_text(json.dumps(meta), encoding="utf-8")
    source = ReplayStore(folder / f"{name}.sqlite")
    spec = config.models[0]
    for row in range(rows):
        source.put(spec.fingerprint(), f"prompt {row}", CachedReply(f"reply {row}", 3, 2))
    source.export_jsonl_gz(record.replay)
    return record


def _pool(*names: str, **overrides: object) -> RouterConfig:
    return RouterConfig.model_validate(
        {"models": [{"name": name, "source": f"test/{name}"} for name in names], **overrides}
    )


def test_a_config_finds_the_record_that_holds_all_its_members_under_its_stage_prompts(tmp_path: Path) -> None:
    four = _pool("a", "b", "c", "d")
    record = _write_record(tmp_path, "four", four, rows=2)
    _write_record(tmp_path, "other", _pool("x", "y"))
    assert [r.name for r in shipped_records(tmp_path)] == ["four", "other"]
    assert shipped_record_for(four, tmp_path) == record
    assert shipped_record_for(_pool("b", "d"), tmp_path) == record  # a sub-pool replays too
    assert shipped_record_for(_pool("a", "e"), tmp_path) is None  # e was never recorded
    changed = _pool("a", "b", stage_prompts=["Answer.", "Check."])
    assert shipped_record_for(changed, tmp_path) is None  # other prompts: other replies
    store = ReplayStore(tmp_path / "target.sqlite")
    assert record.import_into(store) == 2
    assert record.import_into(store) == 0  # existing rows are kept, nothing doubled


def test_a_member_with_another_fingerprint_does_not_fit(tmp_path: Path) -> None:
    base = _pool("a", "b")
    _write_record(tmp_path, "base", base)
    longer = RouterConfig.model_validate(
        {
            "models": [
                {"name": "a", "source": "test/a", "max_new_tokens": 999},
                {"name": "b", "source": "test/b"},
            ]
        }
    )
    assert shipped_record_for(longer, tmp_path) is None


def test_a_broken_meta_file_is_named_with_the_field(tmp_path: Path) -> None:
    record = _write_record(tmp_path, "bad", _pool("a"))
    record.meta.write_text('{"members": {"a": {"backend": "x"}}, "stage_prompts": []}', encoding="utf-8")
    with pytest.raises(ShippedFileError, match=r"bad.replay.meta.json: field 'members' must map"):
        shipped_record_for(_pool("a"), tmp_path)
    record.meta.write_text('{"members": {}, "stage_prompts": "no"}', encoding="utf-8")
    with pytest.raises(ShippedFileError, match=r"field 'stage_prompts' must be a list of strings"):
        record.read_meta()
    record.meta.write_text("{not json", encoding="utf-8")
    with pytest.raises(ShippedFileError, match=r"bad.replay.meta.json: not readable JSON"):
        record.read_meta()


def test_every_shipped_pool_finds_its_own_record() -> None:
    """The default pool and each pool in configs/ replay from training/data out of the box."""
    from hierrouter_graph.defaults import default_config

    repo = Path(__file__).resolve().parents[2]
    assert shipped_record_for(default_config()) == default_shipped_record()
    for path in sorted((repo / "configs").glob("*.yaml")):
        record = shipped_record_for(RouterConfig.from_file(path))
        assert record is not None, path
        assert record.name == path.stem
