"""The run's journal: an append-only, hash-chained file of JSON lines (`events.jsonl`).

The journal is the run's source of truth, so it must (a) survive kill -9 at any instant, and
(b) make any later damage visible instead of silently replaying a wrong history.

(a) Each record is one line written with `O_APPEND` and then fsync'd; the only damage a crash
can leave is an incomplete LAST line (a torn write). `read(repair=True)` cuts that line away;
its event was never acknowledged to anyone, since `append` returns only after the fsync.

(b) Each line carries `prev`, the hash of the line before, and `hash`, the sha256 of the
canonical JSON of `{seq, at, event, prev}`. An edited, deleted, inserted or reordered line
breaks the chain at that line, which raises `JournalCorrupt` naming it. A damaged last line
cannot be told from a torn write and is treated as one; that is the price of (a).

A line: `{"seq":1,"at":"2025-01-01T00:00:00.000000Z","event":{...},"prev":"00..","hash":".."}`
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import JournalCorrupt
from . import failpoints
from .atomic import fsync_dir
from .failpoints import crash_point

__all__ = ["GENESIS_HASH", "Journal", "JournalRead", "record_hash", "utc_now"]

GENESIS_HASH = "0" * 64
_KEYS = frozenset({"seq", "at", "event", "prev", "hash"})


def utc_now() -> str:
    """The current UTC time as ISO 8601 with microseconds and a `Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical(obj: Any) -> str:
    # ASCII-only, sorted, no spaces: one byte string per value, independent of dict order and
    # immune to unpaired surrogates (which cannot be encoded as UTF-8).
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def record_hash(seq: int, at: str, event: Any, prev: str) -> str:
    """The hash a journal line carries: sha256 of the canonical JSON of its other fields."""
    body = _canonical({"seq": seq, "at": at, "event": event, "prev": prev})
    return hashlib.sha256(body.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class JournalRead:
    """The verified records of a journal, and what was wrong with its last line, if anything."""

    records: list[dict[str, Any]]
    repaired_tail: str | None = None

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events alone, oldest first."""
        return [r["event"] for r in self.records]


class _BadLine(Exception):
    """A line failed verification; `torn_like` says whether a torn write could explain it."""

    def __init__(self, reason: str, torn_like: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.torn_like = torn_like


def _verify_line(raw: bytes, seq: int, prev: str) -> dict[str, Any]:
    try:
        rec = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadLine(f"unparseable line ({exc})", torn_like=True) from None
    if not isinstance(rec, dict) or set(rec) != _KEYS:
        raise _BadLine("not a journal record (wrong keys)", torn_like=True)
    if type(rec["seq"]) is not int or not isinstance(rec["at"], str) or not isinstance(
        rec["prev"], str
    ):
        raise _BadLine("malformed record", torn_like=True)
    if rec["hash"] != record_hash(rec["seq"], rec["at"], rec["event"], rec["prev"]):
        raise _BadLine("hash does not match the line's content", torn_like=True)
    # The line is intact in itself; a wrong place in the chain is never a torn write.
    if rec["seq"] != seq:
        raise _BadLine(f"seq {rec['seq']!r} where {seq} was expected", torn_like=False)
    if rec["prev"] != prev:
        raise _BadLine("prev does not match the previous line's hash", torn_like=False)
    return rec


class Journal:
    """Append-only hash-chained JSON lines at `path`. Not safe for concurrent writers:
    only the run lock's holder appends (readers need no lock)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        # The chain's end, known after read() or the first append (None = not loaded yet).
        self._seq: int | None = None
        self._last_hash = GENESIS_HASH
        self._dirty_tail: str | None = None  # a damaged last line seen by read(repair=False)

    # -- reading ---------------------------------------------------------------------------

    def read(self, repair: bool = False) -> JournalRead:
        """Verify every line and return the records.

        A damaged last line (torn write) is dropped from the result and described in
        `repaired_tail`; with `repair=True` it is also truncated away (and fsync'd). Damage
        anywhere else raises `JournalCorrupt(path, line_number, reason)`.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        lines = data.split(b"\n")
        unterminated = lines.pop()  # b"" when the file ends with a newline (or is empty)
        records: list[dict[str, Any]] = []
        prev, offset, tail = GENESIS_HASH, 0, None
        for number, raw in enumerate(lines, start=1):
            try:
                rec = _verify_line(raw, number, prev)
            except _BadLine as bad:
                is_last = number == len(lines) and not unterminated
                if not (is_last and bad.torn_like):
                    raise JournalCorrupt(str(self.path), number, bad.reason) from None
                tail = f"line {number}: {bad.reason}; {len(raw) + 1} bytes dropped"
                break
            records.append(rec)
            prev = rec["hash"]
            offset += len(raw) + 1
        else:
            if unterminated:
                number = len(lines) + 1
                tail = (
                    f"line {number}: no trailing newline (torn write); "
                    f"{len(unterminated)} bytes dropped"
                )
        if tail is not None and repair:
            self._truncate(offset)
        self._seq = len(records)
        self._last_hash = prev
        self._dirty_tail = None if (tail is None or repair) else tail
        return JournalRead(records=records, repaired_tail=tail)

    def _truncate(self, size: int) -> None:
        self.close()  # an O_APPEND fd stays valid, but start clean after a repair
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- appending -------------------------------------------------------------------------

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append one event durably (returns after fsync) and return its full record.

        The event is normalised through JSON first (tuples become lists, keys strings), so the
        returned record equals what `read` will return for it.
        """
        if self._seq is None:
            self.read(repair=False)  # learn the chain's end, once; then append is O(1)
        if self._dirty_tail is not None:
            # Appending after a torn line would bury it mid-file, making the journal corrupt.
            raise JournalCorrupt(
                str(self.path), (self._seq or 0) + 1,
                f"damaged last line not repaired ({self._dirty_tail}); read(repair=True) first",
            )
        assert self._seq is not None
        event = json.loads(_canonical(event))
        seq, at, prev = self._seq + 1, utc_now(), self._last_hash
        digest = record_hash(seq, at, event, prev)
        line = (
            f'{{"seq":{seq},"at":"{at}","event":{_canonical(event)},'
            f'"prev":"{prev}","hash":"{digest}"}}\n'
        ).encode("ascii")
        fd = self._open()
        crash_point("journal.before_write")
        if failpoints.ACTIVE:
            # Two writes only under crash testing, so a test can die between them and leave a
            # real torn line; normally one write(2) keeps the line whole in the page cache.
            half = len(line) // 2
            self._write_all(fd, line[:half])
            crash_point("journal.half_line")
            self._write_all(fd, line[half:])
        else:
            self._write_all(fd, line)
        crash_point("journal.after_write")
        os.fsync(fd)
        if seq == 1:
            fsync_dir(self.path.parent)  # the file's name must be durable too
        self._seq, self._last_hash = seq, digest
        return {"seq": seq, "at": at, "event": event, "prev": prev, "hash": digest}

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644
            )
        return self._fd

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    @property
    def last_seq(self) -> int | None:
        """The seq of the last record, or None before the journal was read or appended to."""
        return self._seq

    def close(self) -> None:
        """Close the append descriptor (a later append reopens it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
