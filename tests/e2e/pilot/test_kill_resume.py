"""kill -9 during generation, then `runner resume`: the records equal an uninterrupted run's.

The kill is a real SIGKILL that the process sends itself at a chosen crash point
(`RUNNER_CRASH_AT`, runner/store/failpoints.py). The points are chosen from the crash log of
the uninterrupted reference run (`small_run`), which does the same work up to there: a batch
commit of generate_instructions (after the batch file's temporary write, before its rename)
or of generate_responses (before the batch is written). The resumed run must then write,
byte for byte, the same `records.jsonl` in every phase as the reference, which is the same
spec and `--run-id` in another state dir.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from pilotlib import (
    EXIT_GATE,
    committed_batches,
    crash_points_by_phase,
    instance,
    nth_after,
    ok,
    phase_records,
    runner,
    status,
)

pytestmark = pytest.mark.slow


def _kill_at(small, state: Path, point: int, phase: str) -> dict:
    """Run the small spec until it SIGKILLs itself at crash point `point`; its status then."""
    killed = runner(state, *small.args, RUNNER_CRASH_AT=str(point))
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    st = status(state, small.run_id)
    assert (st["status"], instance(st, phase, 1)["status"]) == ("interrupted", "running")
    return st


def _resume_and_compare(small, state: Path, phase: str) -> None:
    """Resume; the batch committed before the kill stays as it was, and all records match."""
    first = state / small.run_id / "phases" / f"{phase}.i1" / "batches" / "000000.jsonl"
    before = (first.stat().st_ino, first.stat().st_mtime_ns)
    ok(runner(state, "resume", small.run_id), EXIT_GATE)
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == before, "committed batch redone"
    got, want = phase_records(state, small.run_id), phase_records(small.state_dir, small.run_id)
    assert sorted(got) == sorted(want)
    differ = [name for name in want if got[name] != want[name]]
    assert differ == [], f"records.jsonl differ in {differ}"


def test_kill_in_generate_instructions_then_resume_matches_uninterrupted(small_run, tmp_path):
    """SIGKILL mid-commit of generate_instructions' 2nd batch; resume; records identical."""
    points = crash_points_by_phase(small_run.crash_log, small_run.state_dir / small_run.run_id)
    at = nth_after(points["generate_instructions"], "batch.before_commit", 2,
                   then="atomic.after_temp_write")
    state = tmp_path / "state"
    _kill_at(small_run, state, at, "generate_instructions")
    assert committed_batches(state / small_run.run_id / "phases" / "generate_instructions.i1") == [0]
    _resume_and_compare(small_run, state, "generate_instructions")


def test_kill_in_generate_responses_then_resume_matches_uninterrupted(small_run, tmp_path):
    """SIGKILL before generate_responses commits its 2nd batch; resume; records identical."""
    points = crash_points_by_phase(small_run.crash_log, small_run.state_dir / small_run.run_id)
    at = nth_after(points["generate_responses"], "batch.before_commit", 2)
    state = tmp_path / "state"
    _kill_at(small_run, state, at, "generate_responses")
    assert committed_batches(state / small_run.run_id / "phases" / "generate_responses.i1") == [0]
    _resume_and_compare(small_run, state, "generate_responses")
