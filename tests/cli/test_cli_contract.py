"""The contract's commands end to end: status, gate, log, plan, resume, run, phases, --wait,
budget (see ../shared/CONTRACT.md)."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from corehelpers import DATA, cli, decide, log_events, ok, start, status, tree_digest, wait_for

from runner.store.batches import derive_seed


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run `pipe` of data/pipeline.yaml from a relative --state-dir: it fails in `fixable`
    (exit 1); the test's marker file fixes it and `resume` completes. Returns what each step
    showed."""
    base = tmp_path_factory.mktemp("pipeline")
    marker = base / "marker"
    first = cli("state", "run", str(DATA / "pipeline.yaml"), "--run-id", "pipe",
                "--set", f"marker={marker}", cwd=base)
    failed = status(base / "state", "pipe")
    marker.touch()
    resumed = cli("state", "resume", "pipe", cwd=base)
    return {"state": base / "state", "first": first, "failed": failed, "resumed": resumed,
            "completed": status(base / "state", "pipe")}


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run `bud` of data/budget.yaml: a CUDA-marked phase spends max_usd; the next is refused."""
    state = tmp_path_factory.mktemp("budget") / "state"
    proc = cli(state, "run", str(DATA / "budget.yaml"), "--run-id", "bud")
    return {"state": state, "proc": proc, "status": status(state, "bud")}


def _phase(data: dict[str, Any], name: str, iteration: int = 1) -> dict[str, Any]:
    [p] = [p for p in data["phases"] if p["name"] == name and p["iteration"] == iteration]
    return p


# -- status, gate, log -------------------------------------------------------------------------


def test_status_json_has_the_contract_fields(at_iteration2: Path) -> None:
    """`status --json` has every field of the contract, with the phase and decision fields."""
    data = status(at_iteration2, "rv")
    assert {"run_id", "name", "status", "iteration", "pending_gate", "params", "phases", "decisions"} <= set(data)
    assert (data["run_id"], data["name"], data["status"], data["iteration"], data["pending_gate"]) == (
        "rv", "review-test", "awaiting_decision", 2, "review")
    assert data["params"]["scoring"] == {"threshold": 0.0}
    for p in data["phases"]:
        assert {"name", "iteration", "status", "metrics"} <= set(p)
        assert p["status"] in ("pending", "running", "succeeded", "failed", "reused")
    reused = _phase(data, "make_items", 2)
    assert reused["status"] == "reused" and reused["metrics"] == _phase(data, "make_items", 1)["metrics"]
    assert _phase(data, "score", 2)["metrics"]["pass_rate"] == 1.0
    [d] = data["decisions"]
    assert set(d) >= {"gate", "iteration", "decision", "reviewer", "reason", "set", "override_checks", "at"}
    assert (d["gate"], d["iteration"], d["decision"], d["reviewer"], d["set"], d["override_checks"]) == (
        "review", 1, "iterate", "tester", {"scoring.threshold": 0.0}, False)


def test_status_json_gives_each_phase_its_output_dir(at_iteration2: Path) -> None:
    """Every phase entry has `output_dir`: the absolute folder holding that instance's records
    (a reused instance: the folder of the instance it reuses; a pending one: where it will be)."""
    data = status(at_iteration2, "rv")
    dirs = {(p["name"], p["iteration"]): Path(p["output_dir"]) for p in data["phases"]}
    assert all(d.is_absolute() for d in dirs.values())
    assert all(dirs[(p["name"], p["iteration"])].is_dir() for p in data["phases"] if p["status"] != "pending")
    assert dirs[("score", 2)] == (at_iteration2 / "rv" / "phases" / "score.i2").absolute()
    assert dirs[("make_items", 2)] == dirs[("make_items", 1)]
    assert (dirs[("score", 2)] / "records.jsonl").is_file()


def test_status_without_run_id_lists_every_run(review_at_gate: Path, pipeline: dict[str, Any],
                                               budget_run: dict[str, Any], tmp_path: Path) -> None:
    """`status` without a run id prints every run of the state dir, one line each."""
    state = tmp_path / "state"
    for src, run_id in ((review_at_gate, "rv"), (pipeline["state"], "pipe"), (budget_run["state"], "bud")):
        shutil.copytree(src / run_id, state / run_id)
    lines = ok(cli(state, "status")).stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["run", "name", "status"] and len(lines) == 2 + 3  # header, rule, rows
    by_id = {line.split()[0]: line for line in lines[2:]}
    assert "awaiting_decision" in by_id["rv"] and "completed" in by_id["pipe"] and "failed" in by_id["bud"]


def test_gate_json_has_the_contract_fields(review_at_gate: Path) -> None:
    """`gate --json` has gate, iteration, checks (expr, value, passed) and packet_sha256."""
    packet = json.loads(ok(cli(review_at_gate, "gate", "rv", "--json")).stdout)
    assert (packet["gate"], packet["iteration"]) == ("review", 1)
    checks = {c["expr"]: c for c in packet["checks"]}
    assert set(checks) == {"score.pass_rate >= 0.9", "make_items.count == 12"}
    assert checks["score.pass_rate >= 0.9"]["passed"] is False and checks["make_items.count == 12"]["passed"] is True
    assert checks["make_items.count == 12"]["value"] == 12
    assert len(packet["packet_sha256"]) == 64


def test_gate_out_copies_the_packet(review_at_gate: Path, tmp_path: Path) -> None:
    """`gate --out DIR` copies packet.json and packet.md into DIR."""
    out = tmp_path / "review"
    markdown = ok(cli(review_at_gate, "gate", "rv", "--out", str(out))).stdout
    assert {"packet.json", "packet.md"} <= {p.name for p in out.iterdir()}
    assert (out / "packet.md").read_text() == markdown and "score.pass_rate >= 0.9" in markdown


def test_log_json_prints_the_journal(review_at_gate: Path) -> None:
    """`log --json` prints each journal record as one JSON line, oldest first."""
    lines = ok(cli(review_at_gate, "log", "rv", "--json")).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert records[0]["event"]["kind"] == "run_started" and records[-1]["event"]["kind"] == "gate_reached"
    assert all({"seq", "at", "event", "prev", "hash"} <= set(r) for r in records)


# -- plan ----------------------------------------------------------------------------------------


def test_plan_prints_resolved_params(tmp_path: Path) -> None:
    """`plan SPEC --set` prints the steps with resolved parameters and runs nothing."""
    out = ok(cli(tmp_path / "state", "plan", str(DATA / "review.yaml"), "--set", "count=8")).stdout
    assert "count = 8" in out and "threshold = 0.6" in out
    assert "gate review" in out and "score.pass_rate >= 0.9" in out
    assert not (tmp_path / "state").exists()


def test_plan_run_names_reuse_and_the_changed_key(at_gate: Path) -> None:
    """After ITERATE, `plan --run` names the reused phase and the key that changed."""
    decide(at_gate, "rv", "review", "iterate", "--set", "scoring.threshold=0.0")
    before = tree_digest(at_gate)
    out = ok(cli(at_gate, "plan", "--run", "rv")).stdout
    assert "reuse make_items" in out
    [score] = [line for line in out.splitlines() if "score" in line and "run" in line.split()]
    assert "with.threshold" in score
    assert tree_digest(at_gate) == before


# -- resume and run -----------------------------------------------------------------------------


def test_resume_of_a_completed_run_exits_0_changing_nothing(pipeline: dict[str, Any], tmp_path: Path) -> None:
    """`resume` of a completed run exits 0 and changes no file."""
    state = tmp_path / "state"
    shutil.copytree(pipeline["state"] / "pipe", state / "pipe")
    before = tree_digest(state)
    ok(cli(state, "resume", "pipe"), 0)
    assert tree_digest(state) == before


def test_resume_at_an_undecided_gate_exits_3_changing_nothing(at_gate: Path) -> None:
    """`resume` of a run waiting at a gate with no decision exits 3 and changes no file."""
    before = tree_digest(at_gate)
    ok(cli(at_gate, "resume", "rv"), 3)
    assert tree_digest(at_gate) == before


def test_run_with_a_bad_spec_exits_2_creating_nothing(tmp_path: Path) -> None:
    """`run` of an invalid spec exits 2, reports it located, and creates no run folder."""
    bad = tmp_path / "bad.yaml"
    bad.write_text((DATA / "review.yaml").read_text().replace("    uses: core_phases:score", "    usse: core_phases:score"))
    shutil.copy(DATA / "core_phases.py", tmp_path / "core_phases.py")
    proc = cli(tmp_path / "state", "run", str(bad), "--run-id", "x")
    assert proc.returncode == 2 and f"{bad}:" in proc.stderr and "usse" in proc.stderr, proc.stderr
    assert not (tmp_path / "state" / "x").exists()


def test_run_with_an_existing_run_id_exits_2(at_gate: Path) -> None:
    """`run --run-id` of an id that exists exits 2 and changes nothing."""
    before = tree_digest(at_gate)
    proc = cli(at_gate, "run", str(DATA / "review.yaml"), "--run-id", "rv")
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert tree_digest(at_gate) == before


# -- phases ----------------------------------------------------------------------------------------


def test_failing_phase_exits_1_with_status_failed(pipeline: dict[str, Any]) -> None:
    """A Python phase that raises makes `run` exit 1 and the run `failed` with its error."""
    assert pipeline["first"].returncode == 1, pipeline["first"].stderr
    data = pipeline["failed"]
    fixable = _phase(data, "fixable")
    assert data["status"] == "failed" and fixable["status"] == "failed"
    assert "RuntimeError" in fixable["error"] and "marker" in fixable["error"]
    assert "marker" in (data["failure"] or "")


def test_resume_after_fixing_the_phase_completes(pipeline: dict[str, Any]) -> None:
    """Once the cause is fixed, `resume` reruns the failed phase and completes (exit 0)."""
    assert pipeline["resumed"].returncode == 0, pipeline["resumed"].stderr
    data = pipeline["completed"]
    assert data["status"] == "completed"
    assert _phase(data, "fixable")["status"] == "succeeded" and _phase(data, "fixable")["attempts"] == 2


def test_retry_on_listed_exception_succeeds_logging_two_retries(pipeline: dict[str, Any]) -> None:
    """A phase failing twice with a retried ValueError succeeds on attempt 3; 2 phase_retry logs."""
    flaky = _phase(pipeline["completed"], "flaky")
    assert flaky["status"] == "succeeded" and flaky["metrics"] == {"calls": 3}
    retries = [e for e in log_events(pipeline["state"] / "pipe") if e.get("event") == "phase_retry"]
    assert len(retries) == 2 and all(e["phase"] == "flaky" for e in retries)
    assert "ValueError" in retries[0]["error"]


def test_retry_does_not_retry_an_unlisted_exception(tmp_path: Path) -> None:
    """A KeyError when only ValueError is retried fails the phase at its first attempt."""
    state = tmp_path / "state"
    ok(cli(state, "run", str(DATA / "pipeline.yaml"), "--run-id", "p", "--set", "flaky.error=KeyError"), 1)
    flaky = _phase(status(state, "p"), "flaky")
    assert flaky["status"] == "failed" and "KeyError" in flaky["error"]
    assert (state / "p" / "phases" / "flaky.i1" / "calls.txt").read_text() == "1\n"
    assert [e for e in log_events(state / "p") if e.get("event") == "phase_retry"] == []


def test_shell_phase_metrics_and_records_feed_later_phases(pipeline: dict[str, Any]) -> None:
    """A shell phase's metrics.json and records.jsonl become its metrics and its records."""
    data = pipeline["completed"]
    assert _phase(data, "shell")["metrics"] == {"lines": 3, "seed_mod": derive_seed(5, "shell") % 1000}
    assert _phase(data, "read_shell")["metrics"] == {"shell_records": 3, "shell_value_sum": 30}
    rows = [json.loads(line) for line in (pipeline["state"] / "pipe" / "phases" / "read_shell.i1" / "records.jsonl").read_text().splitlines()]
    assert [(r["i"], r["value"], r["seen_by"]) for r in rows] == [(0, 0, "read_shell"), (1, 10, "read_shell"), (2, 20, "read_shell")]


def test_shell_phase_sees_the_runner_environment(pipeline: dict[str, Any]) -> None:
    """A shell phase gets RUNNER_RUN_ID, _PHASE, _ITERATION, _SEED, _OUTPUT_DIR and its `env`."""
    out_dir = (pipeline["state"] / "pipe" / "phases" / "shell.i1").resolve()
    env = json.loads((out_dir / "env.json").read_text())
    assert env["RUNNER_RUN_ID"] == "pipe" and env["RUNNER_PHASE"] == "shell" and env["RUNNER_ITERATION"] == "1"
    assert env["RUNNER_SEED"] == str(derive_seed(5, "shell"))
    assert Path(env["RUNNER_OUTPUT_DIR"]) == out_dir  # absolute, though --state-dir was relative
    assert env["EXTRA_VALUE"] == "hello"


# -- waiting at a gate --------------------------------------------------------------------------


def _awaiting(state: Path, run_id: str) -> bool:
    proc = cli(state, "status", run_id, "--json")
    return proc.returncode == 0 and json.loads(proc.stdout)["status"] == "awaiting_decision"


def test_run_wait_goes_on_after_a_decision(tmp_path: Path) -> None:
    """`run --wait` stays at the gate; a `decide` from another process lets it go on at once."""
    state = tmp_path / "state"
    proc = start(state, "run", str(DATA / "review.yaml"), "--run-id", "w", "--wait")
    try:
        wait_for(lambda: _awaiting(state, "w"), 60, "the gate")
        assert proc.poll() is None
        decide(state, "w", "review", "proceed", "--override-checks")
        decided = time.monotonic()
        proc.communicate(timeout=30)
        waited = time.monotonic() - decided
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert waited < 2.5, f"the waiting run took {waited:.1f}s to finish after the decision"
    assert status(state, "w")["status"] == "completed"


def test_ctrl_c_while_waiting_exits_3(tmp_path: Path) -> None:
    """SIGINT to `run --wait` waiting at a gate exits 3 and leaves the run awaiting_decision."""
    state = tmp_path / "state"
    proc = start(state, "run", str(DATA / "review.yaml"), "--run-id", "w", "--wait")
    try:
        wait_for(lambda: _awaiting(state, "w"), 60, "the gate")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    assert status(state, "w")["status"] == "awaiting_decision"


# -- budget ----------------------------------------------------------------------------------------


def test_budget_refuses_the_next_phase(budget_run: dict[str, Any]) -> None:
    """Once a CUDA phase's cost reaches max_usd, the next phase is refused: exit 1, `failed`."""
    assert budget_run["proc"].returncode == 1, budget_run["proc"].stderr
    data = budget_run["status"]
    assert data["status"] == "failed" and "budget" in data["failure"]
    assert "max_usd $0.001" in data["failure"]
    assert _phase(data, "after")["status"] == "pending"


def test_budget_shows_gpu_seconds_and_cost(budget_run: dict[str, Any]) -> None:
    """`status --json` shows the CUDA phase's GPU-seconds and their cost at gpu_hour_usd."""
    data = budget_run["status"]
    assert _phase(data, "gpu_work")["used_cuda"] is True
    assert data["gpu_seconds"] >= 0.3
    assert data["cost_usd"] == pytest.approx(data["gpu_seconds"] / 3600 * 36, rel=0.01, abs=1e-4)
    assert data["cost_usd"] >= 0.001
