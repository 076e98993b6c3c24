"""Exactly-once batch commits for one phase instance, and the seeds that make runs repeatable.

A phase writes its records batch by batch; each batch is one file `batches/NNNNNN.jsonl`,
written with `write_atomic`, so the rename is the commit: after kill -9 a batch file either
exists complete (committed, skipped on resume) or not at all (redone on resume). A crash can
leave only a temporary file, which `discard_uncommitted` removes. Committed batches are never
rewritten, so a batch is committed exactly once however often the run is interrupted.

Once a unit of work is finished for good (a sharded phase's shard with its `done.json`), `pack`
folds its batch files into one file, `batches.packed.jsonl` (one line per batch: its index and
its exact bytes), written atomically before any batch file is removed, so at every instant the
batch files and the pack together hold every committed batch; every reader here (committed,
read_batch, read_records, consolidate, commit's first-wins check) reads both. A 15,000-example
run would otherwise leave about 1,200 batch files behind.

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

__all__ = ["PACK_NAME", "BatchStore", "derive_seed", "encode_records", "row_seed"]

_BATCH_NAME = re.compile(r"^(\d{6,})\.jsonl$")
PACK_NAME = "batches.packed.jsonl"  # beside batches/, so it never looks like a batch file
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
        self.pack_path = self.output_dir / PACK_NAME
        self._pack: dict[int, bytes] | None = None  # read once; only `pack` changes it

    def batch_path(self, index: int) -> Path:
        return self.batches_dir / f"{index:06d}.jsonl"

    def _files(self) -> set[int]:
        try:
            names = os.listdir(self.batches_dir)
        except FileNotFoundError:
            return set()
        return {int(m.group(1)) for n in names if (m := _BATCH_NAME.match(n))}

    def _packed(self) -> dict[int, bytes]:
        """The batches in the pack file (index -> the batch file's exact bytes)."""
        if self._pack is None:
            self._pack = {}
            try:
                with open(self.pack_path, encoding="utf-8") as f:
                    for n, line in enumerate(f, 1):
                        try:
                            entry = json.loads(line)
                            self._pack[int(entry["index"])] = entry["jsonl"].encode("utf-8")
                        except (ValueError, KeyError, TypeError, AttributeError):
                            # Written atomically, so this is damage, not a torn write: say where.
                            raise ValueError(f"{self.pack_path}: line {n} is not a packed batch") from None
            except FileNotFoundError:
                pass
        return self._pack

    def committed(self) -> set[int]:
        """The indexes of the committed batches (batch files and packed ones)."""
        return self._files() | set(self._packed())

    def _batch_bytes(self, index: int) -> bytes:
        try:
            return self.batch_path(index).read_bytes()
        except FileNotFoundError:
            if index in self._packed():
                return self._packed()[index]
            raise

    def commit(self, index: int, records: list[dict[str, Any]]) -> bool:
        """Commit batch `index` durably; False (and nothing written) if it already was.

        Committed batches are immutable: the first commit of an index wins. Only the run
        lock's holder commits, so checking for the file before renaming is race-free.
        """
        if index < 0:
            raise ValueError(f"batch index must be >= 0, got {index}")
        path = self.batch_path(index)
        if path.exists() or index in self._packed():
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
        text = self._batch_bytes(index).decode("utf-8")
        return [json.loads(line) for line in text.split("\n") if line.strip()]

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
        chunks = [self._batch_bytes(i) for i in sorted(self.committed())]
        write_atomic(target, b"".join(chunks))
        return target

    def pack(self) -> Path | None:
        """Fold every committed batch file into the pack, then remove the files; the pack's
        path, or None when there were no batch files.

        Only for work that is finished for good: the pack is written (atomically, durably)
        before the first file goes, so a crash at any point leaves every batch readable, in
        the files, the pack, or both (with the same bytes).
        """
        files = sorted(self._files())
        if not files:
            return None
        packed = dict(self._packed())
        for index in files:
            packed.setdefault(index, self.batch_path(index).read_bytes())  # first commit wins
        data = "".join(
            json.dumps({"index": i, "jsonl": packed[i].decode("utf-8")}, ensure_ascii=False) + "\n"
            for i in sorted(packed)
        ).encode("utf-8")
        crash_point("batch.before_pack")
        write_atomic(self.pack_path, data)
        self._pack = packed
        crash_point("batch.packed")
        for index in files:
            os.unlink(self.batch_path(index))
            crash_point("batch.unpacked_file_removed")
        fsync_dir(self.batches_dir)
        try:
            self.batches_dir.rmdir()  # empty unless a crash left a temporary file
            fsync_dir(self.output_dir)
        except OSError:
            pass
        return self.pack_path
