"""Shard workers' events and bars reach the parent through a pipe of JSON lines."""

from __future__ import annotations

import io
from typing import Any

import structlog
from structlog.testing import capture_logs

from runner.console.relay import RelayView, pump
from runner.console.view import ConsoleView, ProgressBar, use_view


class _Recorder(ConsoleView):
    """A parent view that records the bars asked of it."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.calls: list[tuple[Any, ...]] = []

    def progress(self, total: int, desc: str, done: int = 0) -> ProgressBar:
        calls = self.calls
        calls.append(("open", total, desc, done))

        class Bar:
            def update(self, n: int = 1) -> None:
                calls.append(("advance", n))

            def close(self) -> None:
                calls.append(("close",))

        return Bar()


def _worker_output() -> str:
    out = io.StringIO()
    worker = RelayView(out)
    worker.handle({"event": "shard_done", "level": "info", "timestamp": "t", "shard": 2, "records": 5})
    bar = worker.progress(10, "draw: generate", done=4)
    bar.update(3)
    bar.close()
    out.write("Traceback (most recent call last):\nValueError: boom\n")
    return out.getvalue()


def test_pump_relogs_worker_events_with_their_level_and_fields():
    """A relayed event is logged again in the parent with its name, level and fields."""
    seen: list[dict] = []
    with capture_logs() as logs:
        pump(io.StringIO(_worker_output()), structlog.get_logger(), io.StringIO(), seen.append)
    assert [(e["event"], e["log_level"], e["shard"], e["records"]) for e in logs] == [("shard_done", "info", 2, 5)]
    assert [e["event"] for e in seen] == ["shard_done"]


def test_pump_mirrors_worker_bars_in_the_parent_view():
    """open/advance/close of a worker's bar become the same calls on the parent's view."""
    view = _Recorder()
    with use_view(view), capture_logs():
        pump(io.StringIO(_worker_output()), structlog.get_logger(), io.StringIO())
    assert view.calls == [("open", 10, "draw: generate", 4), ("advance", 3), ("close",)]


def test_pump_keeps_other_worker_output_in_the_raw_file():
    """Lines that are not relay messages (a traceback) go to the worker's own log, unchanged."""
    raw = io.StringIO()
    with capture_logs():
        pump(io.StringIO(_worker_output()), structlog.get_logger(), raw)
    assert raw.getvalue() == "Traceback (most recent call last):\nValueError: boom\n"


def test_pump_closes_bars_of_a_worker_that_died():
    """A worker that ends without closing its bar leaves no bar open in the parent."""
    out = io.StringIO()
    RelayView(out).progress(5, "x")
    view = _Recorder()
    with use_view(view):
        pump(io.StringIO(out.getvalue()), structlog.get_logger(), io.StringIO())
    assert view.calls == [("open", 5, "x", 0), ("close",)]
