"""The console without a terminal: one line per phase start or end, the gate table, warnings."""

from __future__ import annotations

import io

import pytest

from runner.console.summary import MAX_LINE
from runner.console.view import LineView, NullProgress, StepInfo, console_mode, progress, use_view

AT = "2026-12-01T14:17:03.431904Z"
GATE = {"event": "gate_reached", "gate": "pilot_qc", "iteration": 1, "run_id": "r1", "timestamp": AT,
        "packet": "/s/r1/gates/pilot_qc.i1/packet.md",
        "checks": [{"expr": "qc.runaway_rate < 0.05", "value": 0.0, "passed": True},
                   {"expr": "qc.median_response_tokens < 40", "value": 52.0, "passed": False}]}


def _lines(*events: dict, steps: tuple[StepInfo, ...] = ()) -> list[str]:
    out = io.StringIO()
    view = LineView(out)
    view.begin("r1", steps)
    for event in events:
        view.handle({"timestamp": AT, "level": "info", **event})
    return out.getvalue().splitlines()


def test_phase_start_and_end_are_one_line_each():
    """A started and a finished phase give two lines: the start, and the end with key metrics."""
    lines = _lines({"event": "phase_started", "phase": "gen", "attempt": 1},
                   {"event": "phase_finished", "phase": "gen", "duration_s": 6.08,
                    "metrics": {"generated": 80, "count": 40, "tokens": 888, "runaway_rate": 0.0}},
                   steps=(StepInfo("gen", "generate_instructions"),))
    assert lines == ["14:17:03 ▶ gen started", "14:17:03 ✓ gen 6.1s  kept 40/80  tokens 888  runaway_rate 0"]


def test_a_retried_phase_says_which_attempt():
    """A second attempt says so on its start line."""
    assert _lines({"event": "phase_started", "phase": "gen", "attempt": 2}) == ["14:17:03 ▶ gen started (attempt 2)"]


def test_failure_is_one_line_that_keeps_the_resume_hint():
    """A failed phase with a long, multi-line error: one line, at most MAX_LINE, ending with the hint."""
    [line] = _lines({"event": "phase_failed", "level": "error", "phase": "gen", "duration_s": 1.0,
                     "error": "boom\n" + "x" * 400, "hint": "fix it, then: runner resume r1"})
    assert len(line) <= MAX_LINE and line.endswith("→ fix it, then: runner resume r1") and "✗ gen failed" in line


def test_reused_phase_names_its_source_iteration():
    """A reused phase is one line naming the iteration it reuses."""
    [line] = _lines({"event": "phase_reused", "phase": "gen", "source_iteration": 1, "kind": "qc",
                     "metrics": {"runaway_rate": 0.0}})
    assert line == "14:17:03 ↺ gen reused from iteration 1  runaway_rate 0"


def test_gate_shows_checks_table_and_next_commands():
    """At a gate: the verdict, a ✓/✗ row per check with value and threshold, and the commands."""
    lines = _lines(GATE)
    assert lines[0] == "⏸ gate pilot_qc (iteration 1): 1 of 2 checks fail"
    rows = [line.split() for line in lines if line[:1] in "✓✗"]
    assert rows == [["✓", "qc.runaway_rate", "0", "<", "0.05"], ["✗", "qc.median_response_tokens", "52", "<", "40"]]
    assert "  runner decide r1 --gate pilot_qc --decision proceed|iterate|abort --reviewer WHO --reason '...'" in lines
    assert "  runner gate r1" in lines and "  runner resume r1" in lines
    assert all(len(line) <= MAX_LINE for line in lines)


def test_other_info_events_are_not_shown():
    """Info events the view does not know (model_loaded, transitions) stay in log.jsonl only."""
    assert _lines({"event": "model_loaded", "path": "/m"}, {"event": "transition", "seq": 3}) == []


def test_warnings_are_one_clipped_line():
    """An unknown warning is shown as `warning: event k=v`, clipped to MAX_LINE."""
    [line] = _lines({"event": "lock_taken_over", "level": "warning", "previous_pid": 12, "detail": "y" * 300})
    assert line.startswith("warning: lock_taken_over previous_pid=12") and len(line) == MAX_LINE


def test_progress_without_a_view_draws_nothing():
    """`progress()` with no active view is a no-op bar."""
    assert isinstance(progress(10, "x"), NullProgress)


def test_progress_of_the_line_view_draws_nothing():
    """Without a terminal, bars write nothing at all."""
    out = io.StringIO()
    with use_view(LineView(out)):
        bar = progress(10, "gen")
        bar.update(5)
        bar.close()
    assert out.getvalue() == ""


@pytest.mark.parametrize(("env", "expected"), [("lines", "lines"), ("live", "live"), ("auto", "lines")])
def test_console_mode_follows_runner_console(monkeypatch, env, expected):
    """RUNNER_CONSOLE forces a mode; `auto` on a non-terminal stream gives lines."""
    monkeypatch.setenv("RUNNER_CONSOLE", env)
    assert console_mode(io.StringIO()) == expected


def test_each_finished_shard_is_one_line():
    """Without a terminal a sharded phase reports each finished shard, with its time when known."""
    lines = _lines({"event": "shard_done", "phase": "draw", "shard": 2, "shards": 4, "duration_s": 3.2},
                   {"event": "shard_done", "phase": "draw", "shard": 0, "shards": 4})
    assert lines == ["14:17:03   draw shard 2 of 4 done 3.2s", "14:17:03   draw shard 0 of 4 done"]
