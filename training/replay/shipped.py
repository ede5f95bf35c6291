"""The recorded outcome trees shipped inside the repo, one per pool, found by the config they fit.

Generating a pool's replies takes hours on a 2-core CPU, so they are recorded once
(``training/record.py``), exported as a small reproducible gzip JSONL, committed, and imported into
the local replay store on demand. With it, ``python training/ppo.py`` and
``python training/evaluate.py`` replay instead of generating — with no arguments (the default
pool) and with ``--config`` for any other shipped pool — and an interrupted recording resumes on
another machine from the committed pieces.

A shipped record named ``NAME`` is three files in ``training/data/``:

- ``NAME.replay.jsonl.gz``: the replies (``ReplayStore.export_jsonl_gz``);
- ``NAME.replay.meta.json``: what produced them (``record_meta.write_record_meta``): per member its
  fingerprint and backend, the stage prompts. ``shipped_record_for`` matches a config against
  it: a record seeds a config's store when it holds every member's fingerprint under the config's
  stage prompts, so a sub-pool of a shipped pool (the dynamic-pool experiment) replays too;
- ``NAME.state_embeddings.safetensors`` (optional): the encoder's embeddings of every context a
  router decides in on the record's complete trees (float16, keyed by the text's sha256). Encoding
  them takes longer on a CPU than the whole PPO run, and they never change while the replies and
  the encoder do not. Rounded to float16 (relative error below 1e-3), a live encode at inference
  differs from them by that much.

``python training/export_shipped.py`` rewrites a record's files from a replay store.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.defaults import default_config
from training.replay.store import ReplayStore, text_sha

__all__ = [
    "SHIPPED_DIR",
    "ShippedFileError",
    "ShippedRecord",
    "default_shipped_record",
    "export_shipped_embeddings",
    "import_shipped_embeddings",
    "note_replayed_numerics",
    "shipped_record_for",
    "shipped_records",
]

SHIPPED_DIR = Path(__file__).parents[1] / "data"
_REPLAY_SUFFIX, _META_SUFFIX, _EMBEDDINGS_SUFFIX = (
    ".replay.jsonl.gz",
    ".replay.meta.json",
    ".state_embeddings.safetensors",
)
_SHA_KEY, _VECTOR_KEY = "text_sha256", "vectors"


class ShippedFileError(ValueError):
    """A shipped file is not what the export writes (names the file and what is wrong)."""


@dataclass(frozen=True)
class ShippedRecord:
    """One shipped pool's files (``folder/NAME.*``); the files need not exist yet (an export)."""

    name: str
    folder: Path = SHIPPED_DIR

    @property
    def replay(self) -> Path:
        return self.folder / f"{self.name}{_REPLAY_SUFFIX}"

    @property
    def meta(self) -> Path:
        return self.folder / f"{self.name}{_META_SUFFIX}"

    @property
    def embeddings(self) -> Path:
        return self.folder / f"{self.name}{_EMBEDDINGS_SUFFIX}"

    def read_meta(self) -> dict[str, object]:
        """The meta file as a dict; a missing or malformed one raises ``ShippedFileError``."""
        try:
            meta = json.loads(self.meta.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise ShippedFileError(
                f"{self.meta}: missing (every shipped record names its pool there)"
            ) from error
        except (OSError, ValueError) as error:  # JSON and UTF-8 decoding errors are ValueErrors
            raise ShippedFileError(f"{self.meta}: not readable JSON ({error})") from error
        members = meta.get("members") if isinstance(meta, dict) else None
        prompts = meta.get("stage_prompts") if isinstance(meta, dict) else None
        if not isinstance(members, dict) or not all(
            isinstance(m, dict) and isinstance(m.get("fingerprint"), str) for m in members.values()
        ):
            raise ShippedFileError(
                f"{self.meta}: field 'members' must map names to {{'fingerprint': str, ...}}"
            )
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ShippedFileError(f"{self.meta}: field 'stage_prompts' must be a list of strings")
        return meta

    def fits(self, config: RouterConfig) -> bool:
        """Whether this record holds every local member of ``config`` under its stage prompts."""
        meta = self.read_meta()
        members = meta["members"]
        prompts = meta["stage_prompts"]
        assert isinstance(members, dict) and isinstance(prompts, list)  # read_meta checked
        recorded = {member["fingerprint"] for member in members.values()}
        local = [spec.fingerprint() for spec in config.models if spec.endpoint is None]
        if not local or not set(local) <= recorded:
            return False
        shared = range(min(config.horizon, len(prompts)))
        return all(config.stage_prompt(stage) == prompts[stage] for stage in shared)

    def numerics_differences(self, config: RouterConfig) -> list[str]:
        """One line per local member whose recorded backend (device, engine, dtype) is not what
        this machine would generate with; empty when the record could have been made here.

        Why: 'dtype: auto' means float32 on one CPU and bf16 on another, so a record replayed on
        other hardware holds replies this machine would not produce; saying so keeps a replayed
        evaluation from passing as a live one.
        """
        from hierrouter_graph.members.local import describe_backend

        members = self.read_meta()["members"]
        assert isinstance(members, dict)  # read_meta checked
        lines = []
        for spec in config.models:
            recorded = members.get(spec.name, {}).get("backend")
            if spec.endpoint is not None or not isinstance(recorded, str):
                continue
            try:
                here = describe_backend(spec, config.resolved_cache_dir)
            except Exception:
                continue
            if here != recorded:
                lines.append(f"{spec.name}: recorded with '{recorded}', this machine would use '{here}'")
        return lines

    def import_into(self, store: ReplayStore) -> int:
        """Add the shipped replies (and state embeddings) the store lacks; existing rows are kept.

        Returns the number of replies added.
        """
        import_shipped_embeddings(store, self.embeddings)
        if not self.replay.is_file():
            return 0
        return store.import_jsonl_gz(self.replay)


_NOTED: set[tuple[str, str]] = set()


def note_replayed_numerics(record: ShippedRecord, config: RouterConfig) -> list[str]:
    """Warn once per process and record when ``record`` was made with other numerics than this
    machine's (``ShippedRecord.numerics_differences``); returns the differences."""
    differences = record.numerics_differences(config)
    key = (str(record.replay), "\n".join(differences))
    if differences and key not in _NOTED:
        _NOTED.add(key)
        warnings.warn(
            f"{record.replay.name} was recorded on other hardware; its replies are replayed as "
            f"recorded, not regenerated here: {'; '.join(differences)}",
            RuntimeWarning,
            stacklevel=2,
        )
    return differences


def shipped_records(folder: Path = SHIPPED_DIR) -> list[ShippedRecord]:
    """Every record in ``folder`` (a meta file beside its replies), sorted by name."""
    names = sorted(path.name.removesuffix(_META_SUFFIX) for path in folder.glob(f"*{_META_SUFFIX}"))
    records = [ShippedRecord(name, folder) for name in names]
    return [record for record in records if record.replay.is_file()]


def shipped_record_for(config: RouterConfig, folder: Path = SHIPPED_DIR) -> ShippedRecord | None:
    """The shipped record that fits ``config`` (``ShippedRecord.fits``), if any."""
    return next((record for record in shipped_records(folder) if record.fits(config)), None)


def default_shipped_record() -> ShippedRecord:
    """The default pool's record; its absence is a broken checkout, said as such."""
    record = shipped_record_for(default_config())
    if record is None:
        raise ShippedFileError(
            f"no record in {SHIPPED_DIR} fits the default pool (a *{_META_SUFFIX} naming every member's "
            "fingerprint and the stage prompts); restore training/data from git"
        )
    return record


def export_shipped_embeddings(store: ReplayStore, texts: Iterable[str], encoder_name: str, path: Path) -> int:
    """Write the stored ``encoder_name`` embeddings of ``texts`` as float16, sorted by sha (atomic).

    Every text must already be encoded in ``store``: a partial file would silently send training
    back to the encoder for the rest.
    """
    shas = sorted({text_sha(text) for text in texts})
    rows = store.get_embedding_rows(encoder_name, shas)
    missing = [sha for sha in shas if sha not in rows]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(shas)} texts have no {encoder_name!r} embedding in the store; "
            "encode them first (CachedEncoder)"
        )
    tensors = {
        _SHA_KEY: torch.tensor([list(bytes.fromhex(sha)) for sha in shas], dtype=torch.uint8).reshape(
            len(shas), 32
        ),
        _VECTOR_KEY: torch.stack([rows[sha] for sha in shas]).to(torch.float16)
        if shas
        else torch.empty(0, 0, dtype=torch.float16),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    # one metadata key: safetensors writes several in no fixed order, and the file must be reproducible
    save_file(tensors, str(partial), metadata={"encoder": encoder_name})
    partial.chmod(0o644)  # a file meant for the repository, readable like its neighbours
    os.replace(partial, path)
    return len(shas)


def import_shipped_embeddings(store: ReplayStore, path: Path) -> int:
    """Add the shipped embeddings the store lacks (as float32); returns how many were added."""
    if not path.is_file():
        return 0
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            keys = set(handle.keys())
            if {_SHA_KEY, _VECTOR_KEY} - keys:
                raise ShippedFileError(
                    f"{path}: expected tensors {_SHA_KEY!r} and {_VECTOR_KEY!r}, got {keys}"
                )
            shas = handle.get_tensor(_SHA_KEY)
            vectors = handle.get_tensor(_VECTOR_KEY)
    except ShippedFileError:
        raise
    except Exception as error:  # safetensors raises its own types for a truncated or foreign file
        raise ShippedFileError(f"{path}: not a readable safetensors file ({error})") from error
    encoder = metadata.get("encoder")
    if not encoder:
        raise ShippedFileError(f"{path}: metadata field 'encoder' is missing")
    if shas.dtype != torch.uint8 or shas.ndim != 2 or shas.shape[1] != 32:
        raise ShippedFileError(
            f"{path}: {_SHA_KEY!r} must be uint8 [n, 32], got {shas.dtype} {tuple(shas.shape)}"
        )
    if vectors.ndim != 2 or vectors.shape[0] != shas.shape[0]:
        raise ShippedFileError(
            f"{path}: {_VECTOR_KEY!r} must be [{shas.shape[0]}, dim], got {tuple(vectors.shape)}"
        )
    hexes = [bytes(row).hex() for row in shas.tolist()]
    return store.put_embedding_rows(encoder, hexes, vectors.to(torch.float32))
