"""`runner resume RUN --spec FILE` and `runner plan --run RUN --spec FILE`: a run failed by a
spec mistake is fixed without re-running what was done; every refusal changes no file."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from corehelpers import DATA, child_env, cli, copy_run, decide, ok, status, tree_digest

from runner.store.journal import Journal

RUN = "am"
SPEC = DATA / "amend.yaml"


def _spec(folder: Path, replace: dict[str, str]) -> Path:
    """A copy of amend.yaml (with core_phases.py beside it) with each key replaced by its value."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DATA / "core_phases.py", folder / "core_phases.py")
    text = SPEC.read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = folder / "fixed.yaml"
    path.write_text(text)
    return path


def _fixed(folder: Path) -> Path:
    return _spec(folder, {"mode: fast": "mode: quick"})


@pytest.fixture(scope="module")
def failed_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run `am` of amend.yaml: gate `review` decided proceed, then `finish` failed (mode fast)."""
    state = tmp_path_factory.mktemp("amend") / "state"
    ok(cli(state, "run", str(SPEC), "--run-id", RUN), 3)
    decide(state, RUN, "review", "proceed")
    ok(cli(state, "resume", RUN), 1)
    return state


@pytest.fixture
def failed(failed_state: Path, tmp_path: Path) -> Path:
    """This test's own copy of the failed run."""
    return copy_run(failed_state, tmp_path / "state")


def _phase_files(state: Path, phase: str) -> dict[str, str]:
    return tree_digest(state / RUN / "phases" / phase)


def _events(state: Path) -> list[dict]:
    return [r["event"] for r in Journal(state / RUN / "events.jsonl").read().records]


def _refused(state: Path, *args: str) -> str:
    """Run ARGS; assert exit 2, no traceback, and not one file of the state dir changed."""
    before = tree_digest(state)
    proc = cli(state, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert tree_digest(state) == before
    return proc.stderr


# -- the happy path ------------------------------------------------------------------------


def test_resume_spec_fixes_the_failed_run(failed: Path, tmp_path: Path) -> None:
    """After `resume --spec` with the mistake fixed the run completes (exit 0)."""
    ok(cli(failed, "resume", RUN, "--spec", str(_fixed(tmp_path / "s"))), 0)
    data = status(failed, RUN)
    assert data["status"] == "completed"
    assert [(p["name"], p["status"]) for p in data["phases"]] == [
        ("make_items", "succeeded"), ("score", "succeeded"), ("finish", "succeeded")]


def test_resume_spec_does_not_rerun_earlier_phases(failed: Path, tmp_path: Path) -> None:
    """The phases before the failure keep their files byte for byte and start no attempt."""
    before = {p: _phase_files(failed, f"{p}.i1") for p in ("make_items", "score")}
    ok(cli(failed, "resume", RUN, "--spec", str(_fixed(tmp_path / "s"))), 0)
    assert {p: _phase_files(failed, f"{p}.i1") for p in ("make_items", "score")} == before
    events = _events(failed)
    amended = next(i for i, e in enumerate(events) if e["kind"] == "spec_amended")
    started = [e["name"] for e in events[amended:] if e["kind"] == "phase_started"]
    assert started == ["finish"]


def test_amendment_is_journalled_and_listed_in_status(failed: Path, tmp_path: Path) -> None:
    """status --json lists the amend with the old and new spec files' sha256."""
    fixed = _fixed(tmp_path / "s")
    ok(cli(failed, "resume", RUN, "--spec", str(fixed)), 0)
    amendments = status(failed, RUN)["amendments"]
    assert [(a["old_sha256"], a["new_sha256"]) for a in amendments] == [
        (hashlib.sha256(SPEC.read_bytes()).hexdigest(), hashlib.sha256(fixed.read_bytes()).hexdigest())]
    assert amendments[0]["at"].endswith("Z")


def test_the_new_spec_values_reach_the_rerun_phase(failed: Path, tmp_path: Path) -> None:
    """The re-run phase reads the amended spec's value (mode thorough), as status shows."""
    fixed = _spec(tmp_path / "s", {"mode: fast": "mode: thorough"})
    ok(cli(failed, "resume", RUN, "--spec", str(fixed)), 0)
    records = (failed / RUN / "phases" / "finish.i1" / "records.jsonl").read_text().splitlines()
    assert {json.loads(r)["mode"] for r in records} == {"thorough"}
    assert status(failed, RUN)["params"]["mode"] == "thorough"


def test_resume_spec_with_set_fixes_the_value(failed: Path) -> None:
    """`--set` goes with `--spec`: the same file with mode=quick set completes the run."""
    ok(cli(failed, "resume", RUN, "--spec", str(SPEC), "--set", "mode=quick"), 0)
    assert status(failed, RUN)["params"]["mode"] == "quick"


def test_amend_at_a_gate_reruns_a_changed_phase_and_keeps_the_one_before(tmp_path: Path) -> None:
    """Awaiting a decision, a changed `score` runs again, `make_items` is kept, the gate is
    reached anew (exit 3)."""
    state = tmp_path / "state"
    ok(cli(state, "run", str(SPEC), "--run-id", RUN), 3)
    make_before = _phase_files(state, "make_items.i1")
    changed = _spec(tmp_path / "s", {"threshold: 0.0": "threshold: 0.5"})
    ok(cli(state, "resume", RUN, "--spec", str(changed)), 3)
    assert _phase_files(state, "make_items.i1") == make_before
    events = _events(state)
    amended = next(i for i, e in enumerate(events) if e["kind"] == "spec_amended")
    assert [e["name"] for e in events[amended:] if e["kind"] == "phase_started"] == ["score"]
    assert events[amended]["changed"] == ["score"]
    data = status(state, RUN)
    assert data["status"] == "awaiting_decision" and data["params"]["scoring"]["threshold"] == 0.5


def test_plan_run_spec_says_what_would_run_and_changes_nothing(failed: Path, tmp_path: Path) -> None:
    """`plan --run --spec` names the kept and re-run steps and why, without writing a file."""
    changed = _spec(tmp_path / "s", {"mode: fast": "mode: quick"})
    before = tree_digest(failed)
    out = ok(cli(failed, "plan", "--run", RUN, "--spec", str(changed))).stdout
    assert tree_digest(failed) == before
    assert "keep  make_items: fingerprint unchanged" in out
    assert "keep  gate review: decided (proceed" in out
    assert "run   finish" in out and "mode changed" in out


def test_plan_run_spec_names_the_changed_key(tmp_path: Path) -> None:
    """A changed `with:` value is named as the reason a phase would run again."""
    state = tmp_path / "state"
    ok(cli(state, "run", str(SPEC), "--run-id", RUN), 3)
    changed = _spec(tmp_path / "s", {"threshold: 0.0": "threshold: 0.5"})
    out = ok(cli(state, "plan", "--run", RUN, "--spec", str(changed))).stdout
    assert "run   score: changed: with.threshold" in out


def test_failure_hint_names_resume_spec(failed_state: Path) -> None:
    """The failed phase's log line says to fix the spec and `resume --spec`."""
    lines = [json.loads(x) for x in (failed_state / RUN / "log.jsonl").read_text().splitlines()]
    hint = next(x["hint"] for x in lines if x.get("event") == "phase_failed")
    assert f"runner resume {RUN} --spec " in hint and str(SPEC) in hint


# -- refusals: exit 2, nothing changed -------------------------------------------------------


def test_refused_another_name(failed: Path, tmp_path: Path) -> None:
    """A spec with another `name` is refused."""
    other = _spec(tmp_path / "s", {"name: amend-test": "name: other", "mode: fast": "mode: quick"})
    err = _refused(failed, "resume", RUN, "--spec", str(other))
    assert "name 'other' is not the run's name 'amend-test'" in err


def test_refused_completed_run(failed: Path, tmp_path: Path) -> None:
    """A completed run is not amended."""
    fixed = _fixed(tmp_path / "s")
    ok(cli(failed, "resume", RUN, "--spec", str(fixed)), 0)
    err = _refused(failed, "resume", RUN, "--spec", str(fixed))
    assert "is completed" in err


def test_refused_aborted_run(tmp_path: Path) -> None:
    """An aborted run (the abort recorded, not yet journalled) is not amended."""
    state = tmp_path / "state"
    ok(cli(state, "run", str(SPEC), "--run-id", RUN), 3)
    decide(state, RUN, "review", "abort")
    err = _refused(state, "resume", RUN, "--spec", str(_fixed(tmp_path / "s")))
    assert "is aborted" in err


def test_refused_decided_gate_renamed(failed: Path, tmp_path: Path) -> None:
    """A gate decided in the current iteration must keep its name."""
    renamed = _spec(tmp_path / "s", {"gate: review": "gate: check", "mode: fast": "mode: quick"})
    err = _refused(failed, "resume", RUN, "--spec", str(renamed))
    assert "gate 'review' has a decision in iteration 1" in err


def test_refused_decided_gate_removed(failed: Path, tmp_path: Path) -> None:
    """A gate decided in the current iteration must still exist."""
    text = _fixed(tmp_path / "s").read_text()
    start = text.index("  - gate: review")
    gone = tmp_path / "s" / "gone.yaml"
    gone.write_text(text[:start] + text[text.index("  - name: finish"):])
    err = _refused(failed, "resume", RUN, "--spec", str(gone))
    assert "gate 'review' has a decision" in err


def test_refused_invalid_spec(failed: Path, tmp_path: Path) -> None:
    """An invalid spec is refused with its located problem."""
    bad = _spec(tmp_path / "s", {"iterate_from: make_items": "iterate_frm: make_items"})
    err = _refused(failed, "resume", RUN, "--spec", str(bad))
    assert "iterate_frm" in err and "did you mean 'iterate_from'" in err


def test_refused_changing_a_phase_before_a_decided_gate(failed: Path, tmp_path: Path) -> None:
    """Re-running a phase before a gate decided in this iteration is refused, saying why."""
    changed = _spec(tmp_path / "s", {"count: 12": "count: 8", "mode: fast": "mode: quick"})
    err = _refused(failed, "resume", RUN, "--spec", str(changed))
    assert "gate 'review' after it was decided" in err


def test_refused_set_without_spec(failed: Path) -> None:
    """`resume --set` without `--spec` is refused (parameters change by a decision or an amend)."""
    err = _refused(failed, "resume", RUN, "--set", "mode=quick")
    assert "--set goes with --spec" in err


def test_refused_plan_of_an_invalid_amend(failed: Path, tmp_path: Path) -> None:
    """`plan --run --spec` reports the refusal the amend would get, exit 2."""
    other = _spec(tmp_path / "s", {"name: amend-test": "name: other"})
    err = _refused(failed, "plan", "--run", RUN, "--spec", str(other))
    assert "is not the run's name" in err


def test_status_lists_no_amendments_for_a_plain_run(failed: Path) -> None:
    """A run never amended has `amendments: []`."""
    assert status(failed, RUN)["amendments"] == []


def test_amend_of_a_ready_run_applies_the_decision_first(tmp_path: Path) -> None:
    """A recorded proceed is journalled and applied before the amend, which then changes only
    the step after the gate; the run completes."""
    state = tmp_path / "state"
    ok(cli(state, "run", str(SPEC), "--run-id", RUN), 3)
    decide(state, RUN, "review", "proceed")
    assert status(state, RUN)["status"] == "ready"
    ok(cli(state, "resume", RUN, "--spec", str(_fixed(tmp_path / "s"))), 0)
    kinds = [e["kind"] for e in _events(state)]
    at = kinds.index("spec_amended")
    assert kinds[at - 2:at + 2] == ["decision_recorded", "resumed", "spec_amended", "phase_started"]


def test_amend_of_an_interrupted_run(tmp_path: Path) -> None:
    """A run killed inside `score` (status interrupted) is amended and goes on to its gate;
    `make_items` is not run again."""
    state = tmp_path / "state"
    log = tmp_path / "crash.log"
    ok(cli(state / "ref", "run", str(SPEC), "--run-id", RUN, env=child_env(RUNNER_CRASH_LOG=str(log))), 3)
    points = [line.split(" ", 1) for line in log.read_text().splitlines()]
    commits = [int(n) for n, label in points if label == "batch.before_commit"]
    killed = cli(state, "run", str(SPEC), "--run-id", RUN, env=child_env(RUNNER_CRASH_AT=str(commits[4])))
    assert killed.returncode == -9
    assert status(state, RUN)["status"] == "interrupted"
    make_before = _phase_files(state, "make_items.i1")
    ok(cli(state, "resume", RUN, "--spec", str(_fixed(tmp_path / "s"))), 3)
    assert _phase_files(state, "make_items.i1") == make_before
    started = [e["name"] for e in _events(state) if e["kind"] == "phase_started"]
    assert started == ["make_items", "score", "score"]


def test_the_run_s_earlier_set_values_are_kept(tmp_path: Path) -> None:
    """A run started with `--set count=8` keeps count 8 under the amended spec, so `make_items`
    (which reads it) is not run again."""
    state = tmp_path / "state"
    ok(cli(state, "run", str(SPEC), "--run-id", RUN, "--set", "count=8"), 3)
    decide(state, RUN, "review", "proceed")
    ok(cli(state, "resume", RUN), 1)
    out = ok(cli(state, "resume", RUN, "--spec", str(_fixed(tmp_path / "s"))), 0).stdout
    assert "keep  make_items: fingerprint unchanged" in out
    assert status(state, RUN)["params"]["count"] == 8
    started = [e["name"] for e in _events(state) if e["kind"] == "phase_started"]
    assert started == ["make_items", "score", "finish", "finish"]
