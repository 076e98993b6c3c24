"""The console progress bar: silent off a terminal, items/s and ETA on one."""

import io

from runner.console.progress import Progress


def test_silent_when_not_a_tty(monkeypatch):
    """Writing to a file (not a tty) draws nothing."""
    monkeypatch.delenv("RUNNER_PROGRESS", raising=False)
    stream = io.StringIO()
    bar = Progress(10, "gen", stream=stream)
    bar.update(10)
    bar.close()
    assert stream.getvalue() == ""


def test_forced_bar_shows_rate_and_eta(monkeypatch):
    """RUNNER_PROGRESS=1 draws the bar with counts, items/s and ETA."""
    monkeypatch.setenv("RUNNER_PROGRESS", "1")
    stream = io.StringIO()
    bar = Progress(10, "gen", stream=stream)
    bar.update(4)
    text = stream.getvalue()
    assert "gen [" in text and "4/10" in text and "it/s ETA" in text
