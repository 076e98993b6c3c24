"""kill -9 at every crash point of an amend (`resume --spec`): the old spec or the new one is in
force afterwards, never a mix, and the run then completes exactly once amended.

An uninterrupted `resume --spec` of the failed run, with `RUNNER_CRASH_LOG`, lists its crash
points (runner/store/failpoints.py): the lock, the new frozen spec's atomic write, the
`spec_amended` journal line (before, torn in half, after the write), the snapshot. The test
kills the command at each of them and at the first point after (the re-run phase starting).
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from corehelpers import DATA, child_env, cli, copy_run, decide, ok, status, tree_digest

from runner.store.journal import Journal

RUN = "am"


@dataclass
class Killed:
    """What one kill point left, and what recovery made of it."""

    point: int
    rc: int
    amended: bool  # the journal holds the spec_amended event
    in_force: str  # the `mode` parameter status shows: 'fast' (old spec) or 'quick' (new)
    frozen_files: list[str]
    recover_rc: int
    final: dict
    finish_modes: set[str]
    kept_files: bool


def _setup(base: Path) -> tuple[Path, Path]:
    """A run failed at `finish` (mode fast, gate decided) and the fixed spec (mode quick)."""
    spec_dir = base / "spec"
    spec_dir.mkdir(parents=True)
    shutil.copyfile(DATA / "core_phases.py", spec_dir / "core_phases.py")
    (spec_dir / "amend.yaml").write_text((DATA / "amend.yaml").read_text())
    fixed = spec_dir / "fixed.yaml"
    fixed.write_text((DATA / "amend.yaml").read_text().replace("mode: fast", "mode: quick"))
    state = base / "failed"
    ok(cli(state, "run", str(spec_dir / "amend.yaml"), "--run-id", RUN), 3)
    decide(state, RUN, "review", "proceed")
    ok(cli(state, "resume", RUN), 1)
    return state, fixed


def _amend_points(failed: Path, fixed: Path, base: Path) -> int:
    """How many crash points the amend itself has (through its snapshot), from a clean run."""
    state = copy_run(failed, base / "reference")
    log = base / "crash.log"
    ok(cli(state, "resume", RUN, "--spec", str(fixed), env=child_env(RUNNER_CRASH_LOG=str(log))), 0)
    labels = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    marker = labels.index("amend.frozen_spec_written")
    # After the marker: the journal line (3 points) and the snapshot (2 points).
    assert labels[marker + 1:marker + 6] == ["journal.before_write", "journal.half_line", "journal.after_write",
                                             "atomic.after_temp_write", "atomic.after_rename"], labels
    return marker + 6


def _kill(point: int, failed: Path, fixed: Path, base: Path) -> Killed:
    state = copy_run(failed, base / f"kill-{point}")
    kept_before = {p: tree_digest(state / RUN / "phases" / f"{p}.i1") for p in ("make_items", "score")}
    killed = cli(state, "resume", RUN, "--spec", str(fixed), env=child_env(RUNNER_CRASH_AT=str(point)))
    events = [r["event"]["kind"] for r in Journal(state / RUN / "events.jsonl").read(repair=False).records]
    seen = status(state, RUN)
    specs = state / RUN / "specs"
    frozen_files = sorted(p.name for p in specs.iterdir()) if specs.exists() else []
    amended = "spec_amended" in events
    # Recovery: the old spec in force needs the amend again; the new one a plain resume.
    again = ["resume", RUN] + ([] if amended else ["--spec", str(fixed)])
    recover = cli(state, *again)
    records = (state / RUN / "phases" / "finish.i1" / "records.jsonl").read_text().splitlines()
    kept_after = {p: tree_digest(state / RUN / "phases" / f"{p}.i1") for p in ("make_items", "score")}
    return Killed(point=point, rc=killed.returncode, amended=amended, in_force=seen["params"]["mode"],
                  frozen_files=frozen_files, recover_rc=recover.returncode, final=status(state, RUN),
                  finish_modes={json.loads(r)["mode"] for r in records}, kept_files=kept_after == kept_before)


@pytest.fixture(scope="module")
def kills(tmp_path_factory: pytest.TempPathFactory) -> list[Killed]:
    """One outcome per crash point of the amend, plus the first point after it."""
    base = tmp_path_factory.mktemp("amend-crash")
    failed, fixed = _setup(base)
    total = _amend_points(failed, fixed, base)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda p: _kill(p, failed, fixed, base), range(1, total + 2)))


@pytest.mark.slow
def test_every_kill_is_a_real_sigkill(kills: list[Killed]) -> None:
    """At each of the 10+ points the command died by SIGKILL."""
    assert len(kills) >= 10
    assert [k.rc for k in kills] == [-9] * len(kills)


@pytest.mark.slow
def test_old_or_new_spec_in_force_never_a_mix(kills: list[Killed]) -> None:
    """Without the journalled amend the old spec's values are in force, with it the new ones."""
    assert [(k.point, k.in_force) for k in kills if k.in_force != ("quick" if k.amended else "fast")] == []
    assert any(k.amended for k in kills) and any(not k.amended for k in kills)


@pytest.mark.slow
def test_an_unused_frozen_spec_is_harmless(kills: list[Killed]) -> None:
    """A kill after the new frozen spec was written but before the event leaves the file
    unused; at most that one file exists."""
    assert all(len(k.frozen_files) <= 1 for k in kills)
    assert any(k.frozen_files and not k.amended for k in kills)


@pytest.mark.slow
def test_every_killed_amend_completes_once_amended(kills: list[Killed]) -> None:
    """Recovery completes the run with exactly one amendment and the new spec's records."""
    bad = [(k.point, k.recover_rc, k.final["status"], len(k.final["amendments"]), k.finish_modes)
           for k in kills if (k.recover_rc, k.final["status"], len(k.final["amendments"]), k.finish_modes)
           != (0, "completed", 1, {"quick"})]
    assert bad == []


@pytest.mark.slow
def test_earlier_phases_are_never_rerun(kills: list[Killed]) -> None:
    """The phases before the failure keep their files byte for byte through kill and recovery."""
    assert [k.point for k in kills if not k.kept_files] == []
