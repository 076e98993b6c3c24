"""Tests of `runner.store.batches`: commits, leftovers, consolidation, pinned seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.store.batches import BatchStore, derive_seed


def _records(index: int) -> list[dict[str, object]]:
    return [{"id": index * 10 + k, "text": f"é{k}", "z": None, "a": [k]} for k in range(3)]


def test_commit_is_visible_in_committed_and_read_records(tmp_path: Path) -> None:
    """Committed batches are listed and read back in index order, whatever the commit order."""
    store = BatchStore(tmp_path / "p.i1")
    for index in (2, 0, 1):
        assert store.commit(index, _records(index)) is True
    assert store.committed() == {0, 1, 2}
    assert store.read_records() == _records(0) + _records(1) + _records(2)
    assert (tmp_path / "p.i1" / "batches" / "000002.jsonl").is_file()


def test_commit_of_a_committed_index_keeps_the_first(tmp_path: Path) -> None:
    """A second commit of one index returns False and does not rewrite the batch."""
    store = BatchStore(tmp_path)
    store.commit(0, _records(0))
    assert store.commit(0, _records(9)) is False
    assert store.read_records() == _records(0)


def test_consolidate_is_byte_identical_for_identical_batches(tmp_path: Path) -> None:
    """Two stores with equal batches, committed in different orders, consolidate identically."""
    one, two = BatchStore(tmp_path / "one"), BatchStore(tmp_path / "two")
    for index in (0, 1, 2):
        one.commit(index, _records(index))
    for index in (2, 1, 0):
        two.commit(index, _records(index))
    assert one.consolidate().read_bytes() == two.consolidate().read_bytes()
    assert one.consolidate().read_bytes().count(b"\n") == 9


def test_discard_uncommitted_removes_only_temp_files(tmp_path: Path) -> None:
    """discard_uncommitted deletes a crash's temp files and keeps committed batches."""
    store = BatchStore(tmp_path)
    store.commit(0, _records(0))
    leftover = store.batches_dir / ".000001.jsonl.abcdef012345.tmp"
    leftover.write_bytes(b'{"id": 1')
    assert store.discard_uncommitted() == [leftover.name]
    assert not leftover.exists() and store.committed() == {0}


def test_missing_batches_folder_means_nothing_committed(tmp_path: Path) -> None:
    """A phase folder without batches has no committed batches and no records."""
    store = BatchStore(tmp_path / "never")
    assert store.committed() == set() and store.read_records() == []
    assert store.discard_uncommitted() == []


def test_derive_seed_values_are_pinned() -> None:
    """derive_seed returns the values pinned when it was written; they must never change."""
    assert derive_seed(1234, "make_items") == 5137834925483520526
    assert derive_seed(1234, "make_items", 0) == 5717155276322175304
    assert derive_seed(1234, "make_items", 1) == 5764593271438443944
    assert derive_seed(0) == 7520536977032167579
    assert derive_seed(7, "a", "b", 3) == 8334020896518893078


def test_derive_seed_distinguishes_part_boundaries_and_types() -> None:
    """("ab", 1) differs from ("a", "b1"), and 1 from "1"; every value fits 63 bits."""
    seeds = {derive_seed(1, "ab", 1), derive_seed(1, "a", "b1"), derive_seed(1, "ab", "1")}
    assert len(seeds) == 3 and all(0 <= s < 2**63 for s in seeds)


def test_derive_seed_rejects_a_float_part() -> None:
    """A float part (ambiguous across platforms) is a TypeError."""
    with pytest.raises(TypeError):
        derive_seed(1, 0.5)  # type: ignore[arg-type]
