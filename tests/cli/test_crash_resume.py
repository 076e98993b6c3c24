"""kill -9 at 20+ reproducible points of a multi-phase run, then resume: nothing lost or repeated.

The runner calls `crash_point` wherever a death leaves a distinct state on disk (see
runner/store/failpoints.py); with `RUNNER_CRASH_AT=N` the process SIGKILLs itself at its N-th
point. An uninterrupted reference run of data/crash.yaml, with `RUNNER_CRASH_LOG`, counts the
points of each process it takes (the `run` up to the gate, then the `resume` after PROCEED).
Kill points are drawn with a seeded RNG, one in each of equal slices of the whole range, so
they are reproducible and cover the start, every phase, the gate and the end.
"""

from __future__ import annotations

import itertools
import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from corehelpers import DATA, child_env, cli, decide, ok, status

from runner.store.journal import Journal

SPEC = DATA / "crash.yaml"
RUN_ID = "crash"
KILL_POINTS = 22
PHASES = ("draw", "transform", "shell_stats", "combine")


def _reference(state: Path, crash_log: Path) -> list[int]:
    """Run the spec uninterrupted (run, decide, resume); return the crash points per process."""
    env = child_env(RUNNER_CRASH_LOG=str(crash_log))
    ok(cli(state, "run", str(SPEC), "--run-id", RUN_ID, env=env), 3)
    decide(state, RUN_ID, "check", "proceed")
    ok(cli(state, "resume", RUN_ID, env=env), 0)
    counts: list[int] = []
    for line in crash_log.read_text().splitlines():
        n = int(line.split()[0])
        if n == 1:
            counts.append(0)
        counts[-1] = n
    return counts


def _phase_files(state: Path) -> dict[str, bytes]:
    """The bytes of every phase instance's records.jsonl, metrics.json and batch files, by
    path relative to `phases/` (`draw.i1/batches/000003.jsonl`)."""
    phases = state / RUN_ID / "phases"
    return {str(p.relative_to(phases)): p.read_bytes() for p in sorted(phases.rglob("*"))
            if p.is_file() and (p.name in ("records.jsonl", "metrics.json") or p.parent.name == "batches")}


def _part(files: dict[str, bytes], batches: bool) -> dict[str, bytes]:
    """Only the batch files (`batches=True`), or only the records and metrics."""
    return {k: v for k, v in files.items() if ("/batches/" in k) == batches}


@dataclass
class Outcome:
    """What one kill point's run came to."""

    point: int
    killed_rc: int
    codes: list[int]
    files: dict[str, bytes]
    stray_batch_files: list[str]
    journal_tail: str | None
    status: str
    log_rc: int
    log_lines: int
    journal_records: int


def _finish(state: Path, codes: list[int]) -> None:
    """`resume` until the run completes, deciding PROCEED at the gate (exit 3)."""
    for _ in range(6):
        rc = cli(state, "resume", RUN_ID).returncode
        codes.append(rc)
        if rc != 3:  # 0: completed; anything else is reported by the tests through `codes`
            return
        decide(state, RUN_ID, "check", "proceed")


def _kill_at(point: int, counts: list[int], state: Path) -> Outcome:
    """Run with a kill at global crash point `point`, recover, and report what came out."""
    process, local = 0, point
    while local > counts[process]:
        local -= counts[process]
        process += 1
    crash = child_env(RUNNER_CRASH_AT=str(local))
    codes: list[int] = []
    if process == 0:  # the `run` dies
        killed = cli(state, "run", str(SPEC), "--run-id", RUN_ID, env=crash)
    else:  # the `resume` after the decision dies
        ok(cli(state, "run", str(SPEC), "--run-id", RUN_ID), 3)
        decide(state, RUN_ID, "check", "proceed")
        killed = cli(state, "resume", RUN_ID, env=crash)
    if not (state / RUN_ID).exists():
        # Killed before the run folder appeared (it is created atomically with its frozen
        # spec): there is no run to resume, and `run` starts it afresh.
        codes.append(cli(state, "run", str(SPEC), "--run-id", RUN_ID).returncode)
        if codes[-1] == 3:
            decide(state, RUN_ID, "check", "proceed")
    _finish(state, codes)
    run_dir = state / RUN_ID
    read = Journal(run_dir / "events.jsonl").read(repair=False)
    log = cli(state, "log", RUN_ID)
    strays = [str(p.relative_to(run_dir)) for p in (run_dir / "phases").glob("*/batches/*")
              if not p.name.endswith(".jsonl") or not p.name[:-6].isdigit()]
    return Outcome(point=point, killed_rc=killed.returncode, codes=codes, files=_phase_files(state),
                   stray_batch_files=strays, journal_tail=read.repaired_tail,
                   status=status(state, RUN_ID)["status"], log_rc=log.returncode,
                   log_lines=len(log.stdout.splitlines()), journal_records=len(read.records))


def _kill_points(total: int) -> list[int]:
    """KILL_POINTS points, one drawn (seeded) in each of equal slices of 1..total."""
    rng = random.Random(1234)
    edges = [1 + (total * i) // KILL_POINTS for i in range(KILL_POINTS + 1)]
    return [rng.randrange(lo, max(lo + 1, hi)) for lo, hi in itertools.pairwise(edges)]


@pytest.fixture(scope="module")
def crash_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], list[int], list[Outcome]]:
    """The reference run's phase files and crash points per process, and every kill's outcome."""
    base = tmp_path_factory.mktemp("crash")
    counts = _reference(base / "reference", base / "crash.log")
    reference = _phase_files(base / "reference")
    points = _kill_points(sum(counts))
    with ThreadPoolExecutor(max_workers=2) as pool:  # two runs at a time: one per core
        outcomes = list(pool.map(lambda p: _kill_at(p, counts, base / f"kill-{p}"), points))
    return reference, counts, outcomes


@pytest.mark.slow
def test_kill_points_cover_the_whole_run(crash_runs: tuple[dict[str, bytes], list[int], list[Outcome]]) -> None:
    """20+ distinct kill points are spread over every process and phase of the reference run."""
    _, counts, outcomes = crash_runs
    points = [o.point for o in outcomes]
    total = sum(counts)
    assert len(counts) == 2 and total > 100, counts
    assert len(set(points)) == len(points) >= 20
    assert min(points) <= total // 10 and max(points) >= total - total // 10
    assert any(p > counts[0] for p in points), "no kill in the resume after the gate"


@pytest.mark.slow
def test_every_kill_is_a_real_sigkill(crash_runs: tuple[dict[str, bytes], list[int], list[Outcome]]) -> None:
    """At every kill point the runner process died by SIGKILL (return code -9)."""
    _, _, outcomes = crash_runs
    assert [o.killed_rc for o in outcomes] == [-9] * len(outcomes), [(o.point, o.killed_rc) for o in outcomes]


@pytest.mark.slow
def test_every_killed_run_completes_after_resume(crash_runs: tuple[dict[str, bytes], list[int], list[Outcome]]) -> None:
    """After each kill, resume (deciding at the gate) brings the run to `completed`, exit 0."""
    _, _, outcomes = crash_runs
    bad = [(o.point, o.codes, o.status) for o in outcomes if o.codes[-1:] != [0] or o.status != "completed"]
    assert not bad


@pytest.mark.slow
def test_records_equal_the_uninterrupted_run_byte_for_byte(crash_runs: tuple[dict[str, bytes], list[int], list[Outcome]]) -> None:
    """Every phase's records.jsonl and metrics.json equal the reference run's, byte for byte."""
    reference, _, outcomes = crash_runs
    expected = _part(reference, batches=False)
    assert {f"{p}.i1/records.jsonl" for p in PHASES} <= set(expected)
    assert [o.point for o in outcomes if _part(o.files, batches=False) != expected] == []


@pytest.mark.slow
def test_no_batch_lost_or_repeated(crash_runs: tuple[dict[str, bytes], list[int], list[Outcome]]) -> None:
    """Every batch file equals the reference's (none lost, none repeated), no temp file left."""
    reference, _, outcomes = crash_runs
    batches = _part(reference, batches=True)
    assert len(batches) == 27  # 3 Python phases x 9 batches
    for o in outcomes:
        got = _part(o.files, batches=True)
        assert got == batches, f"kill point {o.point}: {sorted(set(got) ^ set(batches))}"
        assert o.stray_batch_files == [], f"kill point {o.point}"


@pytest.mark.slow
def test_records_hold_every_item_once(crash_runs: tuple[dict[str, bytes], list[int], list[Outcome]]) -> None:
    """The reference records hold each item id and batch index exactly once per phase."""
    reference, _, _ = crash_runs
    for phase in ("draw", "transform", "combine"):
        rows = [json.loads(line) for line in reference[f"{phase}.i1/records.jsonl"].decode().splitlines()]
        assert sorted(r["id"] for r in rows) == list(range(36)), phase
        assert sorted({r["batch"] for r in rows}) == list(range(9)), phase


@pytest.mark.slow
def test_journal_verifies_after_resume(crash_runs: tuple[dict[str, bytes], list[int], list[Outcome]]) -> None:
    """After the resume each journal verifies: the hash chain holds and no torn tail is left."""
    _, _, outcomes = crash_runs
    assert [(o.point, o.journal_tail) for o in outcomes if o.journal_tail is not None] == []
    assert all(o.journal_records > 10 for o in outcomes)


@pytest.mark.slow
def test_log_works_after_every_kill(crash_runs: tuple[dict[str, bytes], list[int], list[Outcome]]) -> None:
    """`runner log` prints the whole journal of every resumed run (exit 0, one line an event)."""
    _, _, outcomes = crash_runs
    assert [(o.point, o.log_rc, o.log_lines) for o in outcomes if o.log_rc != 0 or o.log_lines != o.journal_records] == []


@pytest.mark.slow
def test_kill_before_the_run_folder_exists_leaves_no_run(tmp_path: Path) -> None:
    """A `run` killed before its frozen spec is in place leaves no run; `run` again starts it."""
    state = tmp_path / "state"
    killed = cli(state, "run", str(SPEC), "--run-id", RUN_ID, env=child_env(RUNNER_CRASH_AT="1"))
    assert killed.returncode == -9
    assert not (state / RUN_ID).exists()
    assert ok(cli(state, "status")).stdout == ""
    ok(cli(state, "run", str(SPEC), "--run-id", RUN_ID), 3)
