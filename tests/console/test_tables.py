"""`runner status` tables and the gate block, rendered as plain text."""

from __future__ import annotations

from runner.console.summary import MAX_LINE
from runner.console.tables import render_text, run_list_table, status_block

STATUS = {
    "run_id": "r1", "name": "demo", "status": "awaiting_decision", "iteration": 2, "pending_gate": "pilot_qc",
    "failure": None, "gpu_seconds": 5400.0, "cost_usd": 3.75, "max_usd": 40,
    "phases": [
        {"name": "gen", "iteration": 1, "status": "succeeded", "wall_s": 6.08, "reused_from": None,
         "metrics": {"generated": 80, "count": 40, "tokens": 888}},
        {"name": "gen", "iteration": 2, "status": "reused", "wall_s": 0.0, "reused_from": 1,
         "metrics": {"generated": 80, "count": 40, "tokens": 888}},
        {"name": "qc", "iteration": 2, "status": "failed", "wall_s": 1.5, "reused_from": None, "metrics": {}},
    ],
    "decisions": [{"gate": "pilot_qc", "iteration": 1, "decision": "iterate", "reviewer": "ana",
                   "reason": "too long [red]x[/red]", "set": {"response.temperature": 0.5},
                   "override_checks": False, "at": "2026-12-01T14:21:53.1Z"}],
}


def test_status_table_has_phases_time_and_key_metrics():
    """Each phase instance is a row with iteration, status, time and its key metrics."""
    lines = render_text(status_block(STATUS, {"gen": "generate_instructions", "qc": "qc"}))
    assert lines[0] == "run r1 (demo): awaiting_decision, iteration 2, gate 'pilot_qc' pending"
    gen1 = next(line for line in lines if line.startswith("gen") and "succeeded" in line)
    assert gen1.split()[:4] == ["gen", "1", "succeeded", "6.1s"] and "kept 40/80" in gen1
    assert any(line.split()[:4] == ["gen", "2", "reused", "(i1)"] for line in lines)
    assert any(line.split()[:4] == ["qc", "2", "failed", "1.5s"] for line in lines)


def test_status_table_lists_decisions_with_reason_and_set():
    """The decision history shows gate, decision, reviewer, time, reason (markup shown as text) and set."""
    lines = render_text(status_block(STATUS, {}))
    row = next(line for line in lines if line.startswith("pilot_qc"))
    assert row.split()[:4] == ["pilot_qc", "1", "iterate", "ana"] and "2026-12-01 14:21:53" in row
    assert "too long [red]x[/red]" in row and "set response.temperature=0.5" in row


def test_status_shows_gpu_time_and_cost():
    """GPU time and its cost (with the budget) close the view."""
    assert render_text(status_block(STATUS, {}))[-1] == "GPU time 1h30m, cost $3.75 of max $40"


def test_status_without_a_price_says_how_to_get_a_cost():
    """No gpu_hour_usd: the cost line says which spec key gives one."""
    data = {**STATUS, "cost_usd": None, "decisions": []}
    lines = render_text(status_block(data, {}))
    assert "decisions: none yet" in lines and "budget.gpu_hour_usd" in lines[-1]


def test_run_list_is_one_row_per_run():
    """Without a run id: a header, then one compact row per run within MAX_LINE."""
    rows = [{"run_id": "a", "name": "demo", "status": "completed", "iteration": 1, "pending_gate": None,
             "phases": "5/5", "gpu_seconds": 12.0},
            {"run_id": "b", "status": "unreadable", "error": "bad journal"}]
    lines = render_text(run_list_table(rows))
    body = [line.split() for line in lines[2:]]
    assert lines[0].split() == ["run", "name", "status", "iter", "gate", "phases", "GPU", "time"]
    assert body == [["a", "demo", "completed", "1", "-", "5/5", "12.0s"], ["b", "-", "unreadable", "-", "-", "-", "-"]]
    assert all(len(line) <= MAX_LINE for line in lines)
