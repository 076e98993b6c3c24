"""structlog set-up: log.jsonl gets every line, the console what a person reads, -v both."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from runner.console.logs import attach_run_log, configure_logging, detach_run_log, get_logger
from runner.console.view import LineView, use_view


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """Each test configures structlog for itself; the defaults come back after it."""
    yield
    detach_run_log()
    structlog.reset_defaults()


def _log_some(tmp_path: Path) -> list[dict]:
    attach_run_log(tmp_path / "run" / "log.jsonl")
    log = get_logger()
    log.info("phase_started", phase="gen", attempt=1)
    log.debug("batch_committed", phase="gen", batch=0)
    log.warning("journal_tail_repaired", detail="cut 12 bytes")
    return [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]


def test_without_a_view_only_warnings_reach_the_console(tmp_path):
    """No view, no -v: the console shows the warning only; log.jsonl has the info line too."""
    console = io.StringIO()
    configure_logging(console=console)
    logged = _log_some(tmp_path)
    assert console.getvalue() == "warning: journal_tail_repaired detail=cut 12 bytes\n"
    assert [e["event"] for e in logged] == ["phase_started", "journal_tail_repaired"]
    assert logged[0]["run_id"] == "run" and logged[0]["attempt"] == 1


def test_the_view_turns_events_into_lines(tmp_path):
    """With a line view, a phase start is a readable line, not a structured one."""
    console = io.StringIO()
    configure_logging(console=console)
    with use_view(LineView(console)):
        _log_some(tmp_path)
    lines = console.getvalue().splitlines()
    assert lines[0].endswith("▶ gen started") and "attempt=" not in console.getvalue()
    assert lines[1] == "warning: journal_tail_repaired detail=cut 12 bytes"


def test_verbose_shows_every_structured_line_and_the_view_lines(tmp_path):
    """-v: each event (debug too) as a structured line on the console, besides the view's lines."""
    console = io.StringIO()
    configure_logging(verbose=True, console=console)
    with use_view(LineView(console, verbose=True)):
        logged = _log_some(tmp_path)
    text = console.getvalue()
    assert "phase_started attempt=1" in text and "batch_committed batch=0" in text
    assert "▶ gen started" in text
    assert text.count("journal_tail_repaired") == 1  # not once structured and once as a warning line
    assert [e["event"] for e in logged] == ["phase_started", "batch_committed", "journal_tail_repaired"]
