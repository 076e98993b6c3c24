"""Exactly-once batch commits for one phase instance, and the seeds that make runs repeatable.

A phase writes its records batch by batch; each batch is one file `batches/NNNNNN.jsonl`,
written with `write_atomic`, so the rename is the commit: after kill -9 a batch file either
exists complete (committed, skipped on resume) or not at all (redone on resume). A crash can
leave only a temporary file, which `discard_uncommitted` removes. Committed batches are never
rewritten, so a batch is committed exactly once however often the run is interrupted.

Because a batch's records depend only on its seed (`derive_seed(run_seed, phase, index)`), a
redone batch equals the one that would have been written without the crash, and so does
`records.jsonl`, which is the committed batches concatenated in index order.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from .atomic import fsync_dir, is_temp_name, makedirs_durable, write_atomic
from .failpoints import crash_point

__all__ = ["BatchStore", "derive_seed", "encode_records", "row_seed"]

_BATCH_NAME = re.compile(r"^(\d{6,})\.jsonl$")
_SEED_BITS = 63  # fits a signed 64-bit int (numpy, torch, C) and Python's random alike


def derive_seed(run_seed: int, *parts: str | int) -> int:
    """A stable 63-bit seed derived from the run's seed and `parts` (phase name, batch index).

    NEVER CHANGE THIS FUNCTION (encoding, hash, bit count): every phase and batch seed of
    every run comes from it, and changing it would make existing specs draw different numbers,
    breaking reproducibility across versions and making resumed runs mix two seed schemes.
    The parts are JSON-encoded as a list, so ("ab", 1) and ("a", "b1") differ, and 1 and "1"
    differ too. Pinned values are asserted in tests/store/test_store_batches.py.
    """
    for part in (run_seed, *parts):
        if isinstance(part, bool) or not isinstance(part, (int, str)):
            raise TypeError(f"derive_seed parts must be str or int, got {part!r}")
    payload = json.dumps([run_seed, *parts], ensure_ascii=True, separators=(",", ":"))
    digest = hashlib.sha256(payload.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - _SEED_BITS)


def row_seed(seed: int, row: int, salt: str = "") -> int:
    """A 63-bit seed for one row of a batch, stable across processes and platforms."""
    digest = hashlib.sha256(f"{seed}:{row}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def encode_records(records: list[dict[str, Any]]) -> bytes:
    """The JSON-lines bytes of `records`: one sorted-key object per line, UTF-8."""
    return "".join(
        json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records
    ).encode("utf-8")


class BatchStore:
    """The committed batches of one phase instance folder (`output_dir/batches/`)."""

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.output_dir = Path(output_dir)
        self.batches_dir = self.output_dir / "batches"

    def batch_path(self, index: int) -> Path:
        return self.batches_dir / f"{index:06d}.jsonl"

    def committed(self) -> set[int]:
        """The indexes of the committed batches."""
        try:
            names = os.listdir(self.batches_dir)
        except FileNotFoundError:
            return set()
        return {int(m.group(1)) for n in names if (m := _BATCH_NAME.match(n))}

    def commit(self, index: int, records: list[dict[str, Any]]) -> bool:
        """Commit batch `index` durably; False (and nothing written) if it already was.

        Committed batches are immutable: the first commit of an index wins. Only the run
        lock's holder commits, so checking for the file before renaming is race-free.
        """
        if index < 0:
            raise ValueError(f"batch index must be >= 0, got {index}")
        path = self.batch_path(index)
        if path.exists():
            return False
        data = encode_records(records)  # before any disk effect: a bad record raises cleanly
        if not self.batches_dir.is_dir():
            makedirs_durable(self.batches_dir)  # the folder's name must be durable too
        crash_point("batch.before_commit")
        write_atomic(path, data)
        return True

    def discard_uncommitted(self) -> list[str]:
        """Remove the temporary files a crash left behind; return their names."""
        try:
            names = sorted(n for n in os.listdir(self.batches_dir) if is_temp_name(n))
        except FileNotFoundError:
            return []
        for name in names:
            try:
                os.unlink(self.batches_dir / name)
            except FileNotFoundError:
                pass
        if names:
            fsync_dir(self.batches_dir)
        return names

    def read_batch(self, index: int) -> list[dict[str, Any]]:
        """The records of one committed batch."""
        with open(self.batch_path(index), encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def read_records(self) -> list[dict[str, Any]]:
        """All committed records, in batch-index order."""
        records: list[dict[str, Any]] = []
        for index in sorted(self.committed()):
            records.extend(self.read_batch(index))
        return records

    def consolidate(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write all committed batches, in index order, to `path` (default
        `output_dir/records.jsonl`) atomically; byte-identical whenever the batches are."""
        target = Path(path) if path is not None else self.output_dir / "records.jsonl"
        chunks = [self.batch_path(i).read_bytes() for i in sorted(self.committed())]
        write_atomic(target, b"".join(chunks))
        return target
