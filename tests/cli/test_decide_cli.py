"""`runner decide`: every refusal of the contract exits 2 with one line and changes no file;
the accepted decisions are recorded and acted on by `resume`."""

from __future__ import annotations

import json
from pathlib import Path

from corehelpers import cli, decide, ok, status, tree_digest

RUN = "rv"


def _refused(state: Path, *args: str) -> str:
    """Run `decide RUN ARGS...`; assert exit 2, one error line, no traceback and not one file
    of the state dir changed; return the error line."""
    before = tree_digest(state)
    proc = cli(state, "decide", RUN, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert tree_digest(state) == before
    return lines[0]


def _options(decision: str, *extra: str, gate: str = "review") -> list[str]:
    return ["--gate", gate, "--decision", decision, "--reviewer", "tester", "--reason", "because", *extra]


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "decision.yaml"
    path.write_text(text)
    return str(path)


def _packet(state: Path) -> dict:
    return json.loads(ok(cli(state, "gate", RUN, "--json")).stdout)


# -- refusals --------------------------------------------------------------------------------


def test_refused_when_no_gate_of_that_name_is_pending(at_gate: Path) -> None:
    """A decision for a gate that is not the pending one is refused."""
    line = _refused(at_gate, *_options("abort", gate="nosuch"))
    assert "no gate 'nosuch' is pending" in line


def test_refused_when_the_gate_was_already_decided(at_gate: Path) -> None:
    """A second decision on a decided gate is refused."""
    decide(at_gate, RUN, "review", "abort")
    line = _refused(at_gate, *_options("iterate", "--set", "scoring.threshold=0.1"))
    assert "already has a decision" in line


def test_refused_set_with_proceed(at_gate: Path) -> None:
    """`--set` goes with iterate only: proceed with --set is refused."""
    line = _refused(at_gate, *_options("proceed", "--override-checks", "--set", "scoring.threshold=0.1"))
    assert "--set goes with iterate only" in line


def test_refused_unknown_set_key(at_gate: Path) -> None:
    """`--set` of a parameter that does not exist is refused, with a did-you-mean."""
    line = _refused(at_gate, *_options("iterate", "--set", "scoring.treshold=0.1"))
    assert "unknown parameter 'scoring.treshold'" in line and "did you mean 'scoring.threshold'" in line


def test_refused_set_key_not_in_may_set(at_gate: Path) -> None:
    """`--set` of an existing parameter outside the gate's may_set is refused."""
    line = _refused(at_gate, *_options("iterate", "--set", "count=8"))
    assert "does not allow changing 'count'" in line


def test_refused_wrong_packet(at_gate: Path) -> None:
    """`--packet` that is not the pending packet's sha256 is refused."""
    line = _refused(at_gate, *_options("abort", "--packet", "0" * 64))
    assert "does not match the pending packet" in line


def test_refused_proceed_with_a_failing_check(at_gate: Path) -> None:
    """PROCEED while a check fails is refused without --override-checks."""
    line = _refused(at_gate, *_options("proceed"))
    assert "score.pass_rate >= 0.9" in line and "--override-checks" in line


def test_refused_iterate_past_max_iterations(at_iteration2: Path) -> None:
    """ITERATE once the gate was reached max_iterations times is refused."""
    line = _refused(at_iteration2, *_options("iterate", "--set", "scoring.threshold=0.5"))
    assert "max_iterations (2)" in line


def test_refused_decision_file_with_unknown_key(at_gate: Path, tmp_path: Path) -> None:
    """A decision file with an unknown key is refused at its line, with a did-you-mean."""
    path = _file(tmp_path, "gate: review\ndecision: abort\nreviewer: me\nreason: nope\nreviwer: x\n")
    line = _refused(at_gate, "--file", path)
    assert line.startswith(f"{path}:5:1:") and "did you mean 'reviewer'" in line


def test_refused_decision_file_with_missing_key(at_gate: Path, tmp_path: Path) -> None:
    """A decision file without `reason` is refused, naming the key."""
    path = _file(tmp_path, "gate: review\ndecision: abort\nreviewer: me\n")
    line = _refused(at_gate, "--file", path)
    assert line.startswith(path) and "reason" in line


def test_refused_decision_file_with_bad_yaml(at_gate: Path, tmp_path: Path) -> None:
    """A decision file that is not valid YAML is refused with its location."""
    path = _file(tmp_path, "gate: review\ndecision: [abort\nreviewer: me\n")
    line = _refused(at_gate, "--file", path)
    assert line.startswith(path)


def test_refused_file_together_with_options(at_gate: Path, tmp_path: Path) -> None:
    """`--file` together with decision options is refused."""
    path = _file(tmp_path, "gate: review\ndecision: abort\nreviewer: me\nreason: nope\n")
    line = _refused(at_gate, "--file", path, "--gate", "review")
    assert "either --file or the decision options" in line


# -- accepted decisions ------------------------------------------------------------------------


def test_proceed_with_override_checks_is_recorded_as_such(at_gate: Path) -> None:
    """PROCEED with --override-checks over a failing check is recorded with override_checks."""
    decide(at_gate, RUN, "review", "proceed", "--override-checks")
    [d] = status(at_gate, RUN)["decisions"]
    assert (d["gate"], d["decision"], d["override_checks"]) == ("review", "proceed", True)


def test_status_ready_after_proceed(at_iteration2: Path) -> None:
    """After PROCEED (checks passing, matching --packet) the run is `ready`, gate not pending."""
    decide(at_iteration2, RUN, "review", "proceed", "--packet", _packet(at_iteration2)["packet_sha256"])
    data = status(at_iteration2, RUN)
    assert data["status"] == "ready" and data["iteration"] == 2
    assert data["decisions"][-1]["override_checks"] is False


def test_status_ready_after_iterate(at_gate: Path) -> None:
    """After ITERATE the run is `ready` and keeps its iteration number until resume."""
    decide(at_gate, RUN, "review", "iterate", "--set", "scoring.threshold=0.1")
    data = status(at_gate, RUN)
    assert (data["status"], data["iteration"]) == ("ready", 1)
    assert data["decisions"][0]["set"] == {"scoring.threshold": 0.1}


def test_pending_gate_is_null_once_decided(at_gate: Path) -> None:
    """A recorded decision ends the gate's pending: `pending_gate` null before `resume`."""
    assert status(at_gate, RUN)["pending_gate"] == "review"
    decide(at_gate, RUN, "review", "iterate", "--set", "scoring.threshold=0.1")
    data = status(at_gate, RUN)
    assert (data["status"], data["pending_gate"]) == ("ready", None)


def test_pending_gate_is_null_once_aborted(at_gate: Path) -> None:
    """After ABORT, before `resume` journals it, the run is `aborted` with no pending gate."""
    decide(at_gate, RUN, "review", "abort")
    data = status(at_gate, RUN)
    assert (data["status"], data["pending_gate"]) == ("aborted", None)


def test_status_aborted_after_abort(at_gate: Path) -> None:
    """After ABORT the run is `aborted`."""
    decide(at_gate, RUN, "review", "abort")
    assert status(at_gate, RUN)["status"] == "aborted"


def test_resume_journals_an_abort_decision_and_exits_5(at_gate: Path) -> None:
    """The first `resume` after ABORT acts on it: the journal records the decision; exit 5."""
    decide(at_gate, RUN, "review", "abort")
    ok(cli(at_gate, "resume", RUN), 5)
    kinds = [json.loads(line)["event"]["kind"] for line in (at_gate / RUN / "events.jsonl").read_text().splitlines()]
    assert kinds[-1] == "decision_recorded"


def test_resume_of_an_aborted_run_exits_5(at_gate: Path) -> None:
    """`resume` of an aborted run exits 5 without changing a file."""
    decide(at_gate, RUN, "review", "abort")
    ok(cli(at_gate, "resume", RUN), 5)
    before = tree_digest(at_gate)
    ok(cli(at_gate, "resume", RUN), 5)
    assert tree_digest(at_gate) == before


def test_decision_file_is_recorded(at_gate: Path, tmp_path: Path) -> None:
    """A decision file with every key is accepted and recorded as written."""
    sha = _packet(at_gate)["packet_sha256"]
    path = _file(tmp_path, "gate: review\ndecision: iterate\nreviewer: agent-7\nreason: too strict\n"
                           f"set: {{scoring.threshold: 0.25}}\npacket_sha256: '{sha}'\noverride_checks: false\n")
    ok(cli(at_gate, "decide", RUN, "--file", path))
    data = status(at_gate, RUN)
    [d] = data["decisions"]
    assert data["status"] == "ready"
    assert (d["decision"], d["reviewer"], d["reason"], d["set"]) == ("iterate", "agent-7", "too strict", {"scoring.threshold": 0.25})


def test_iterate_changes_params_and_iteration_after_resume(at_gate: Path) -> None:
    """ITERATE with --set: after resume, status shows the new parameter and iteration 2."""
    decide(at_gate, RUN, "review", "iterate", "--set", "scoring.threshold=0.0")
    ok(cli(at_gate, "resume", RUN), 3)
    data = status(at_gate, RUN)
    assert data["params"]["scoring"]["threshold"] == 0.0 and data["params"]["count"] == 12
    assert (data["iteration"], data["status"], data["pending_gate"]) == (2, "awaiting_decision", "review")
