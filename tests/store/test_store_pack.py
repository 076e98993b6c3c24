"""`BatchStore.pack`: a finished unit's batch files folded into one file, readable as before."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from runner.store.batches import PACK_NAME, BatchStore


def _records(index: int) -> list[dict[str, object]]:
    return [{"id": index * 10 + k, "text": f"é{k}", "x": 0.1 * k, "z": None} for k in range(3)]


def _store(folder: Path, indexes: range = range(4)) -> BatchStore:
    store = BatchStore(folder)
    for index in indexes:
        store.commit(index, _records(index))
    return store


def test_pack_leaves_one_file_and_no_batch_folder(tmp_path: Path) -> None:
    """After pack, the unit's batches are one file and `batches/` is gone."""
    _store(tmp_path).pack()
    assert sorted(p.name for p in tmp_path.iterdir()) == [PACK_NAME]


def test_packed_batches_are_still_committed(tmp_path: Path) -> None:
    """`committed()` lists packed batches, in a new store instance too (a resumed process)."""
    _store(tmp_path).pack()
    assert BatchStore(tmp_path).committed() == {0, 1, 2, 3}


def test_packed_batches_read_back_equal(tmp_path: Path) -> None:
    """`read_batch` and `read_records` return the records committed, in index order."""
    _store(tmp_path).pack()
    store = BatchStore(tmp_path)
    assert (store.read_batch(2), store.read_records()) == (
        _records(2), [r for i in range(4) for r in _records(i)])


def test_consolidate_after_pack_is_byte_identical(tmp_path: Path) -> None:
    """records.jsonl written from the pack has the bytes it had from the batch files."""
    before = _store(tmp_path / "a").consolidate().read_bytes()
    store = _store(tmp_path / "b")
    store.pack()
    assert BatchStore(tmp_path / "b").consolidate().read_bytes() == before


def test_commit_of_a_packed_index_keeps_the_first(tmp_path: Path) -> None:
    """A packed batch is committed: committing its index again is refused, nothing written."""
    _store(tmp_path).pack()
    store = BatchStore(tmp_path)
    assert store.commit(1, _records(9)) is False and store.read_batch(1) == _records(1)
    assert not (tmp_path / "batches").exists()


def test_pack_folds_later_batches_into_the_existing_pack(tmp_path: Path) -> None:
    """Batches committed after a pack join it on the next pack; none is lost."""
    _store(tmp_path, range(2)).pack()
    store = BatchStore(tmp_path)
    store.commit(2, _records(2))
    store.pack()
    assert BatchStore(tmp_path).read_records() == [r for i in range(3) for r in _records(i)]


def test_pack_without_batch_files_does_nothing(tmp_path: Path) -> None:
    """No batch files: no pack is written."""
    assert BatchStore(tmp_path).pack() is None and list(tmp_path.iterdir()) == []


def test_damaged_pack_is_reported_with_its_line(tmp_path: Path) -> None:
    """A pack line that is not a packed batch raises ValueError naming the file and line."""
    _store(tmp_path).pack()
    with open(tmp_path / PACK_NAME, "a", encoding="utf-8") as f:
        f.write("not json\n")
    with pytest.raises(ValueError, match=rf"{PACK_NAME}: line 5 is not a packed batch"):
        BatchStore(tmp_path).committed()


PACK_FOUR = """
import sys
from runner.store.batches import BatchStore
store = BatchStore(sys.argv[1])
for index in range(4):
    store.commit(index, [{"id": index, "t": "é"}])
store.pack()
"""


@pytest.mark.parametrize("label,occurrence", [
    ("batch.before_pack", 1), ("batch.packed", 1), ("batch.unpacked_file_removed", 2)])
def test_kill_while_packing_loses_no_batch(tmp_path: Path, run_py: Any, child_env: Any,
                                           label: str, occurrence: int) -> None:
    """SIGKILL before, just after, or midway through the pack: all 4 batches still read back."""
    log = tmp_path / "crash.log"
    assert run_py(PACK_FOUR, str(tmp_path / "dry"), env=child_env(RUNNER_CRASH_LOG=str(log))).returncode == 0
    points = [line.split(" ", 1) for line in log.read_text().splitlines()]
    kill_at = [int(n) for n, lab in points if lab == label][occurrence - 1]
    out = tmp_path / "out"
    assert run_py(PACK_FOUR, str(out), env=child_env(RUNNER_CRASH_AT=str(kill_at))).returncode == -signal.SIGKILL
    store = BatchStore(out)
    assert store.read_records() == [{"id": i, "t": "é"} for i in range(4)]
