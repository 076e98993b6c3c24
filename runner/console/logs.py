"""structlog set-up: every log line is an event name plus key-values.

Each line goes to two places: a readable console line on stderr, and, once a run folder is
known, one JSON object per line appended to that run's `log.jsonl`. Both come from the same
event dict, so the console and the file never disagree. Progress bars are not log lines and
never reach the JSON file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import IO, Any, TextIO, cast

import structlog

__all__ = ["attach_run_log", "configure_logging", "detach_run_log", "get_logger"]

_run_log: IO[str] | None = None


def _tee_json(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Append the event to the run's log.jsonl (if attached) before console rendering."""
    if _run_log is not None:
        _run_log.write(json.dumps(event_dict, default=str, sort_keys=True) + "\n")
        _run_log.flush()
    return event_dict


def configure_logging(verbose: bool = False, console: IO[str] | None = None) -> None:
    """Configure structlog for this process: console on stderr, JSON tee when attached."""
    level = logging.DEBUG if verbose else logging.INFO
    stream = console if console is not None else sys.stderr
    colors = stream.isatty() and "NO_COLOR" not in os.environ
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _tee_json,
            structlog.dev.ConsoleRenderer(colors=colors, pad_event_to=0),
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
    _run_log = open(path, "a", encoding="utf-8")
    structlog.contextvars.bind_contextvars(run_id=path.parent.name)


def detach_run_log() -> None:
    """Stop teeing into the run log (at process end or before switching runs)."""
    global _run_log
    if _run_log is not None:
        _run_log.close()
        _run_log = None
    structlog.contextvars.unbind_contextvars("run_id")


def get_logger(**bound: Any) -> Any:
    """A structlog logger with `bound` key-values on every line."""
    return structlog.get_logger("runner").bind(**bound)
