"""Unit tests of `runner.store.journal`: the hash chain, torn tails, detected damage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.errors import JournalCorrupt
from runner.store.journal import GENESIS_HASH, Journal, record_hash


def _journal_with(path: Path, n: int) -> Journal:
    journal = Journal(path)
    for i in range(n):
        journal.append({"type": "Tick", "i": i})
    journal.close()
    return journal


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_chain_verifies(tmp_path: Path) -> None:
    """Records read back carry consecutive seqs and an unbroken, recomputable hash chain."""
    path = tmp_path / "events.jsonl"
    _journal_with(path, 5)
    result = Journal(path).read()
    assert result.repaired_tail is None
    assert [r["seq"] for r in result.records] == [1, 2, 3, 4, 5]
    prev = GENESIS_HASH
    for rec in result.records:
        assert rec["prev"] == prev
        assert rec["hash"] == record_hash(rec["seq"], rec["at"], rec["event"], rec["prev"])
        prev = rec["hash"]


def test_append_returns_the_record_read_back(tmp_path: Path) -> None:
    """`append` returns exactly the record that `read` later returns for it."""
    path = tmp_path / "events.jsonl"
    with Journal(path) as journal:
        returned = [journal.append({"type": "A", "n": (1, 2)}), journal.append({"type": "B"})]
    assert Journal(path).read().records == returned
    assert returned[0]["event"] == {"type": "A", "n": [1, 2]}


def test_reopened_journal_continues_the_chain(tmp_path: Path) -> None:
    """A new Journal on an existing file appends seq n+1 chained to the last line."""
    path = tmp_path / "events.jsonl"
    _journal_with(path, 3)
    rec = Journal(path).append({"type": "Later"})
    records = Journal(path).read().records
    assert rec["seq"] == 4 and rec["prev"] == records[2]["hash"] and records[3] == rec


def test_missing_journal_reads_empty(tmp_path: Path) -> None:
    """A journal file that does not exist yet reads as no records and no damage."""
    result = Journal(tmp_path / "events.jsonl").read(repair=True)
    assert result.records == [] and result.repaired_tail is None


def test_edited_middle_line_raises_naming_the_line(tmp_path: Path) -> None:
    """Changing an event in line 2 of 4 raises JournalCorrupt for line 2."""
    path = tmp_path / "events.jsonl"
    _journal_with(path, 4)
    lines = _lines(path)
    rec = json.loads(lines[1])
    rec["event"]["i"] = 99
    lines[1] = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
    path.write_bytes(b"".join(lines))
    with pytest.raises(JournalCorrupt) as info:
        Journal(path).read(repair=True)
    assert info.value.line == 2 and "hash" in info.value.reason


def test_deleted_middle_line_raises_naming_the_line(tmp_path: Path) -> None:
    """Deleting line 2 of 4 raises JournalCorrupt at line 2 (seq 3 where 2 was expected)."""
    path = tmp_path / "events.jsonl"
    _journal_with(path, 4)
    lines = _lines(path)
    path.write_bytes(b"".join(lines[:1] + lines[2:]))
    with pytest.raises(JournalCorrupt) as info:
        Journal(path).read(repair=True)
    assert info.value.line == 2 and "seq" in info.value.reason


def test_deleted_second_to_last_line_is_not_mistaken_for_a_torn_tail(tmp_path: Path) -> None:
    """With line 2 of 3 deleted, the intact last line breaks the chain: corrupt, not torn."""
    path = tmp_path / "events.jsonl"
    _journal_with(path, 3)
    lines = _lines(path)
    path.write_bytes(lines[0] + lines[2])
    with pytest.raises(JournalCorrupt):
        Journal(path).read(repair=True)


def test_rehashed_edit_breaks_the_next_line(tmp_path: Path) -> None:
    """An edit whose own hash was recomputed is caught by the next line's `prev`."""
    path = tmp_path / "events.jsonl"
    _journal_with(path, 3)
    lines = _lines(path)
    rec = json.loads(lines[0])
    rec["event"]["i"] = 42
    rec["hash"] = record_hash(rec["seq"], rec["at"], rec["event"], rec["prev"])
    lines[0] = (json.dumps(rec) + "\n").encode()
    path.write_bytes(b"".join(lines))
    with pytest.raises(JournalCorrupt) as info:
        Journal(path).read()
    assert info.value.line == 2 and "prev" in info.value.reason


def test_unterminated_last_line_is_reported_but_kept_without_repair(tmp_path: Path) -> None:
    """read(repair=False) drops a torn last line from the result and leaves the file alone."""
    path = tmp_path / "events.jsonl"
    _journal_with(path, 3)
    torn = path.read_bytes()[:-10]
    path.write_bytes(torn)
    result = Journal(path).read(repair=False)
    assert len(result.records) == 2
    assert result.repaired_tail is not None and "line 3" in result.repaired_tail
    assert path.read_bytes() == torn


def test_bad_hash_on_last_line_is_repaired_as_torn(tmp_path: Path) -> None:
    """A complete last line with a wrong hash is truncated away by read(repair=True)."""
    path = tmp_path / "events.jsonl"
    _journal_with(path, 3)
    lines = _lines(path)
    lines[2] = lines[2].replace(b'"i":2', b'"i":7')
    path.write_bytes(b"".join(lines))
    result = Journal(path).read(repair=True)
    assert len(result.records) == 2 and "hash" in (result.repaired_tail or "")
    assert path.read_bytes() == b"".join(lines[:2])


def test_append_refuses_after_an_unrepaired_torn_tail(tmp_path: Path) -> None:
    """Appending while a torn last line is unrepaired raises instead of burying it."""
    path = tmp_path / "events.jsonl"
    _journal_with(path, 2)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(JournalCorrupt):
        Journal(path).append({"type": "X"})


def test_append_after_repair_continues_from_the_last_good_line(tmp_path: Path) -> None:
    """After read(repair=True) cut a torn line, the next append takes its seq."""
    path = tmp_path / "events.jsonl"
    _journal_with(path, 3)
    path.write_bytes(path.read_bytes()[:-5])
    journal = Journal(path)
    journal.read(repair=True)
    assert journal.append({"type": "Again"})["seq"] == 3
    assert [r["seq"] for r in Journal(path).read().records] == [1, 2, 3]
