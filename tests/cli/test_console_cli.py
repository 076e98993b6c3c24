"""What `runner` prints for a person: status tables, -v structured lines, one line per transition."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from corehelpers import DATA, cli, ok


def test_status_table_shows_phases_and_decisions(at_iteration2: Path) -> None:
    """`status RUN` (not --json): a row per phase instance and the decision history."""
    out = ok(cli(at_iteration2, "status", "rv")).stdout
    lines = out.splitlines()
    assert lines[0] == "run rv (review-test): awaiting_decision, iteration 2, gate 'review' pending"
    rows = [line.split() for line in lines if line.split()[:1] in (["make_items"], ["score"])]
    assert [r[:3] for r in rows] == [["make_items", "1", "succeeded"], ["score", "1", "succeeded"],
                                     ["make_items", "2", "reused"], ["score", "2", "succeeded"]]
    decision = next(line for line in lines if line.startswith("review "))
    assert decision.split()[:4] == ["review", "1", "iterate", "tester"]
    assert "test says iterate" in decision and "set scoring.threshold=0" in decision
    assert lines[-1].startswith("GPU time ")


def test_status_json_is_unchanged_by_the_table(at_gate: Path) -> None:
    """`status --json` is still the contract's object (the table is for people only)."""
    data = json.loads(ok(cli(at_gate, "status", "rv", "--json")).stdout)
    assert set(data) >= {"run_id", "name", "status", "iteration", "pending_gate", "params", "phases",
                         "decisions", "gpu_seconds", "cost_usd"}
    listed = json.loads(ok(cli(at_gate, "status", "--json")).stdout)
    assert listed == [{"run_id": "rv", "name": "review-test", "status": "awaiting_decision", "iteration": 1,
                       "pending_gate": "review"}]


def test_status_of_an_empty_state_dir_prints_nothing(tmp_path: Path) -> None:
    """No runs: no table, no header, exit 0."""
    assert ok(cli(tmp_path / "state", "status")).stdout == ""


@pytest.mark.slow
def test_verbose_shows_structured_lines_each_transition_once(tmp_path: Path) -> None:
    """-v prints the structured log lines; every journal seq appears in exactly one of them."""
    proc = ok(cli(tmp_path / "state", "-v", "run", str(DATA / "review.yaml"), "--run-id", "v1"), 3)
    seqs = [int(m) for m in re.findall(r" seq=(\d+)", proc.stderr)]
    journal = (tmp_path / "state" / "v1" / "events.jsonl").read_text().splitlines()
    assert sorted(seqs) == list(range(1, len(journal) + 1)), proc.stderr
    assert "phase_started" in proc.stderr and "▶ make_items started" in proc.stderr


@pytest.mark.slow
def test_without_verbose_no_structured_lines(tmp_path: Path) -> None:
    """Without -v the console holds the phase lines and the gate table, no key=value log lines."""
    proc = ok(cli(tmp_path / "state", "run", str(DATA / "review.yaml"), "--run-id", "q1"), 3)
    assert "seq=" not in proc.stderr and "event_kind" not in proc.stderr, proc.stderr
    assert "✗   score.pass_rate" in proc.stderr and "(proceed while a check fails needs --override-checks)" in proc.stderr
