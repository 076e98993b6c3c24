"""The live view on a terminal, rendered by rich into a recording console."""

from __future__ import annotations

import io

from rich.console import Console

from runner.console.live import LiveView
from runner.console.view import StepInfo, progress, use_view

STEPS = (StepInfo("gen", "generate_instructions"), StepInfo("critic", "critic_filter"), StepInfo("g", "gate"))


def _console() -> Console:
    return Console(file=io.StringIO(), record=True, force_terminal=True, width=120, color_system="truecolor")


def test_rows_show_status_elapsed_metrics_and_the_bar():
    """One row per step; a running phase's bar shows done/total, rate and ETA."""
    console = _console()
    view = LiveView(console=console)
    with use_view(view):
        view.begin("r1", STEPS)
        view.handle({"event": "phase_started", "phase": "gen", "attempt": 1})
        view.handle({"event": "model_loaded", "level": "info", "seconds": 2.9})  # no phase: the running one
        bar = progress(80, "gen: generate")
        bar.update(30)
        frame = Console(file=io.StringIO(), record=True, width=120)
        frame.print(view)
        text = frame.export_text()
        bar.close()
        view.handle({"event": "phase_finished", "phase": "gen", "duration_s": 6.1,
                     "metrics": {"generated": 80, "count": 40, "tokens": 888}})
    assert "gen" in text and "running" in text and "pending" in text and "gate" in text
    assert "gen: generate" in text and "30/80" in text and "ETA" in text
    assert "model loaded" in text  # a running phase's row says what it did last
    final = console.export_text()
    assert "✓ gen" in final and "succeeded" in final and "6.1s" in final and "kept 40/80" in final


def test_gate_stops_the_live_area_and_prints_the_checks():
    """At a gate the last frame stays and the check table with the commands follows it."""
    console = _console()
    view = LiveView(console=console)
    with use_view(view):
        view.begin("r1", STEPS)
        view.handle({"event": "gate_reached", "gate": "g", "iteration": 1, "run_id": "r1",
                     "checks": [{"expr": "gen.count >= 50", "value": 40, "passed": False}]})
    text = console.export_text(clear=False)
    assert "awaiting decision" in text and "1 of 1 checks fail" in text
    assert "✗" in text and "gen.count" in text and ">= 50" in text
    assert "runner decide r1 --gate g --decision proceed|iterate|abort" in text
    assert "\x1b[" in console.export_text(styles=True)  # drawn with colours on a terminal


def test_failure_is_printed_after_the_table():
    """A failed phase: ✗ in its row, then the error and the resume hint below the table."""
    console = _console()
    view = LiveView(console=console)
    with use_view(view):
        view.begin("r1", STEPS)
        view.handle({"event": "phase_started", "phase": "gen"})
        view.handle({"event": "phase_failed", "phase": "gen", "duration_s": 0.5, "error": "ValueError: bad",
                     "hint": "fix it, then: runner resume r1"})
    text = console.export_text()
    assert "✗ gen" in text and "✗ gen failed: ValueError: bad" in text and "runner resume r1" in text


def test_bars_left_open_are_removed_at_close():
    """A phase that raised before closing its bar leaves no bar behind."""
    view = LiveView(console=_console())
    with use_view(view):
        view.begin("r1", STEPS)
        progress(10, "gen: generate").update(3)
    assert view.bars.tasks == []


def test_a_proceeded_gate_is_shown_as_passed():
    """After a PROCEED decision the gate's row reads `proceeded`, not `gate`."""
    console = _console()
    view = LiveView(console=console)
    with use_view(view):
        view.begin("r1", STEPS)
        view.handle({"event": "decision_applied", "gate": "g", "decision": "proceed", "reviewer": "ana"})
    text = console.export_text()
    assert "→ proceed at gate g by ana" in text and "proceeded" in text
