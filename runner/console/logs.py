"""structlog set-up: every log line is an event name plus key-values.

Each event goes, once a run folder is known, into that run's `log.jsonl` as one JSON object
per line: the full structured record. The console gets what a person reads: the active view
(`view.py`) turns the events it knows into phase lines, a live table or a gate table; without
a view only warnings and errors are shown. `-v` (verbose) also prints every structured line,
debug ones included, on the console, rendered by structlog's console renderer.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import IO, Any, TextIO, cast

import structlog

from runner.console.view import active_view, generic_line

__all__ = ["attach_run_log", "configure_logging", "detach_run_log", "get_logger"]

_run_log: IO[str] | None = None
_lock = threading.RLock()  # shard-relay threads log too: one event at a time, whole lines
_settings: dict[str, Any] = {"verbose": False, "stream": None, "renderer": None}


def _tee_json(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Append the event to the run's log.jsonl (if attached) before console rendering."""
    with _lock:
        if _run_log is not None:
            _run_log.write(json.dumps(event_dict, default=str, sort_keys=True) + "\n")
            _run_log.flush()
    return event_dict


def _to_console(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Hand the event to the console view (and, with -v, its structured line); print nothing else."""
    stream = _settings["stream"] or sys.stderr
    with _lock:
        view = active_view()
        if _settings["verbose"]:
            line = _settings["renderer"](logger, method, dict(event_dict))
            if view is not None:
                view.structured(line)
            else:
                _write(stream, line)
        if view is not None:
            view.handle(event_dict)
        elif not _settings["verbose"] and event_dict.get("level") in ("warning", "error", "critical"):
            _write(stream, generic_line(event_dict))
    raise structlog.DropEvent


def _write(stream: IO[str], line: str) -> None:
    try:
        stream.write(line + "\n")
        stream.flush()
    except (OSError, ValueError):  # the console went away; the log file has the line
        pass


def configure_logging(verbose: bool = False, console: IO[str] | None = None) -> None:
    """Configure structlog for this process: the JSON tee, then the console view."""
    level = logging.DEBUG if verbose else logging.INFO
    stream = console if console is not None else sys.stderr
    try:
        colors = stream.isatty() and "NO_COLOR" not in os.environ
    except (AttributeError, ValueError):
        colors = False
    _settings.update(verbose=verbose, stream=stream,
                     renderer=structlog.dev.ConsoleRenderer(colors=colors, pad_event_to=0))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _tee_json,
            _to_console,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, stream)),
        cache_logger_on_first_use=False,
    )


def attach_run_log(path: Path) -> None:
    """Tee every following log line into `path` (a run's log.jsonl) as JSON."""
    global _run_log
    detach_run_log()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock:
        _run_log = open(path, "a", encoding="utf-8")
    structlog.contextvars.bind_contextvars(run_id=path.parent.name)


def detach_run_log() -> None:
    """Stop teeing into the run log (at process end or before switching runs)."""
    global _run_log
    with _lock:
        if _run_log is not None:
            _run_log.close()
            _run_log = None
    structlog.contextvars.unbind_contextvars("run_id")


def get_logger(**bound: Any) -> Any:
    """A structlog logger with `bound` key-values on every line."""
    return structlog.get_logger("runner").bind(**bound)
