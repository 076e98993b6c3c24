"""Crash tests: a real SIGKILL at a failpoint in a subprocess, then recovery in this one."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from runner.store.batches import BatchStore
from runner.store.journal import Journal

APPEND_THREE = """
import sys
from runner.store.journal import Journal
j = Journal(sys.argv[1])
for i in range(3):
    j.append({"type": "Tick", "i": i})
"""

COMMIT_FIVE = """
import sys
from runner.store.batches import BatchStore, derive_seed
store = BatchStore(sys.argv[1])
store.discard_uncommitted()
done = store.committed()
for index in range(5):
    if index not in done:
        seed = derive_seed(1234, "make_items", index)
        store.commit(index, [{"id": index * 10 + k, "seed": seed, "t": "é"} for k in range(4)])
store.consolidate()
"""


def _points(log: Path) -> list[tuple[int, str]]:
    pairs = [line.split(" ", 1) for line in log.read_text().splitlines()]
    return [(int(n), label) for n, label in pairs]


def _nth_point(log: Path, label: str, occurrence: int) -> int:
    """The counter value of the `occurrence`-th (1-based) crash point labelled `label`."""
    hits = [n for n, lab in _points(log) if lab == label]
    return hits[occurrence - 1]


def test_crash_log_lists_every_point_of_an_uninterrupted_run(
    tmp_path: Path, run_py: Any, child_env: Any
) -> None:
    """RUNNER_CRASH_LOG numbers the journal's 3 points per append, in order."""
    log = tmp_path / "crash.log"
    env = child_env(RUNNER_CRASH_LOG=str(log))
    proc = run_py(APPEND_THREE, str(tmp_path / "ev.jsonl"), env=env)
    assert proc.returncode == 0, proc.stderr
    labels = [label for _, label in _points(log)]
    assert labels == ["journal.before_write", "journal.half_line", "journal.after_write"] * 3
    assert [n for n, _ in _points(log)] == list(range(1, 10))


def test_torn_tail_from_a_real_crash_is_repaired_and_reported(
    tmp_path: Path, run_py: Any, child_env: Any
) -> None:
    """SIGKILL between the halves of the 3rd line leaves a torn tail that repair cuts off."""
    log, path = tmp_path / "crash.log", tmp_path / "ev.jsonl"
    assert run_py(APPEND_THREE, str(tmp_path / "dry.jsonl"),
                  env=child_env(RUNNER_CRASH_LOG=str(log))).returncode == 0
    kill_at = _nth_point(log, "journal.half_line", 3)
    proc = run_py(APPEND_THREE, str(path), env=child_env(RUNNER_CRASH_AT=str(kill_at)))
    assert proc.returncode == -signal.SIGKILL
    assert not path.read_bytes().endswith(b"\n")
    result = Journal(path).read(repair=True)
    assert [r["event"]["i"] for r in result.records] == [0, 1]
    assert result.repaired_tail is not None and "line 3" in result.repaired_tail
    assert path.read_bytes().endswith(b"\n")
    assert Journal(path).read().repaired_tail is None


def test_crash_after_write_before_fsync_keeps_the_line(
    tmp_path: Path, run_py: Any, child_env: Any
) -> None:
    """A kill after the line's write(2) but before fsync leaves it whole (page cache)."""
    log, path = tmp_path / "crash.log", tmp_path / "ev.jsonl"
    assert run_py(APPEND_THREE, str(tmp_path / "dry.jsonl"),
                  env=child_env(RUNNER_CRASH_LOG=str(log))).returncode == 0
    kill_at = _nth_point(log, "journal.after_write", 2)
    proc = run_py(APPEND_THREE, str(path), env=child_env(RUNNER_CRASH_AT=str(kill_at)))
    assert proc.returncode == -signal.SIGKILL
    result = Journal(path).read(repair=True)
    assert len(result.records) == 2 and result.repaired_tail is None


def test_batch_commit_is_exactly_once_across_a_crash(
    tmp_path: Path, run_py: Any, child_env: Any
) -> None:
    """Killed mid-commit of batch 3, a rerun discards the temp, keeps 0-2, and ends identical."""
    log = tmp_path / "crash.log"
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    assert run_py(COMMIT_FIVE, str(clean), env=child_env(RUNNER_CRASH_LOG=str(log))).returncode == 0
    # Batch i's commit passes batch.before_commit then atomic.after_temp_write: kill at the
    # temp write of batch 3 (the 4th), leaving a complete temp file but no commit.
    kill_at = _nth_point(log, "atomic.after_temp_write", 4)
    proc = run_py(COMMIT_FIVE, str(crashed), env=child_env(RUNNER_CRASH_AT=str(kill_at)))
    assert proc.returncode == -signal.SIGKILL
    store = BatchStore(crashed)
    assert store.committed() == {0, 1, 2}
    leftovers = [p.name for p in (crashed / "batches").iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".000003.jsonl.")
    first_bytes = {i: store.batch_path(i).read_bytes() for i in (0, 1, 2)}
    assert run_py(COMMIT_FIVE, str(crashed)).returncode == 0
    assert store.committed() == {0, 1, 2, 3, 4}
    assert not any(p.name.endswith(".tmp") for p in (crashed / "batches").iterdir())
    assert all(store.batch_path(i).read_bytes() == b for i, b in first_bytes.items())
    assert (crashed / "records.jsonl").read_bytes() == (clean / "records.jsonl").read_bytes()


def test_crash_after_rename_leaves_the_new_file_committed(
    tmp_path: Path, run_py: Any, child_env: Any
) -> None:
    """A kill right after a batch's rename (before the folder fsync) still counts it committed."""
    log, out = tmp_path / "crash.log", tmp_path / "out"
    assert run_py(COMMIT_FIVE, str(tmp_path / "dry"),
                  env=child_env(RUNNER_CRASH_LOG=str(log))).returncode == 0
    kill_at = _nth_point(log, "atomic.after_rename", 2)
    assert run_py(COMMIT_FIVE, str(out), env=child_env(RUNNER_CRASH_AT=str(kill_at))).returncode < 0
    assert BatchStore(out).committed() == {0, 1}
