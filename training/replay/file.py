"""The portable record of a replay store: replies (and their confidences) as gzip JSONL.

Why a format of its own: a whole recorded outcome tree ships inside the repository
(``training/data/*.replay.jsonl.gz``) and is imported into any user's SQLite store, so the file
must be reproducible byte for byte — rows sorted, keys sorted, a gzip header with no name and
mtime 0, no creation time — and a committed file only changes when its content does. Embeddings
are not part of it (they are recomputed from the encoder). ``ReplayStore.export_jsonl_gz`` and
``ReplayStore.import_jsonl_gz`` read and write the store's side; this module the file's.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hierrouter_graph.confidence import Confidence
from hierrouter_graph.hop import CachedReply

__all__ = ["RECORD_FIELDS", "ReplyRecord", "read_records", "write_records"]

RECORD_FIELDS = ("fingerprint", "prompt", "reply", "tokens_in", "tokens_out")
"""The reply columns of a record line, in the order ``write_records`` expects them."""

ReplyRecord = tuple[str, str, CachedReply]
"""(fingerprint, prompt, reply): one stored hop."""


def write_records(path: str | os.PathLike[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write ``rows`` (``RECORD_FIELDS`` then mean_logprob, mean_entropy, source — ``None`` when
    the reply has no confidence) to ``path``, atomically. Returns the number of rows."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    width = len(RECORD_FIELDS)
    count = 0
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for row in rows:
            record: dict[str, Any] = dict(zip(RECORD_FIELDS, row[:width], strict=True))
            mean_logprob, mean_entropy, source = row[width:]
            if mean_logprob is not None:
                record["confidence"] = {"mean_logprob": mean_logprob, "mean_entropy": mean_entropy}
                record["confidence_source"] = source
            gz.write((json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))
            count += 1
    os.replace(tmp, target)
    return count


def read_records(
    path: str | os.PathLike[str],
) -> tuple[list[ReplyRecord], list[tuple[str, str, Confidence, str]]]:
    """(replies, confidences) of a written file; a bad line raises ``ValueError`` naming it."""
    rows: list[ReplyRecord] = []
    confidences: list[tuple[str, str, Confidence, str]] = []
    number = 0
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    reply = CachedReply(str(data["reply"]), int(data["tokens_in"]), int(data["tokens_out"]))
                    rows.append((str(data["fingerprint"]), str(data["prompt"]), reply))
                    confidence = Confidence.from_any(data.get("confidence"))
                    if confidence is not None:
                        source = str(data.get("confidence_source", "generation"))
                        confidences.append((rows[-1][0], rows[-1][1], confidence, source))
                except (KeyError, TypeError, ValueError) as error:
                    raise ValueError(f"{path}:{number}: not a replay record ({error})") from error
    except (EOFError, gzip.BadGzipFile, UnicodeDecodeError, zlib.error) as error:
        # A truncated download, a plain-text file, a damaged block: name the file and the place.
        where = f"after line {number}" if number else "at its start"
        raise ValueError(
            f"{path}: expected a complete gzip file of JSON lines (a replay record), but it is "
            f"truncated or not gzip {where} ({type(error).__name__}: {error})"
        ) from error
    return rows, confidences
