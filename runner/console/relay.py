"""Shard worker processes report to the parent's console and log through a pipe.

A local shard worker (`python -m runner.phases.shards`) has no view of its own: its
`RelayView` writes each log event and each progress-bar change as one JSON line on its
stderr. The parent reads that pipe (`pump`, one thread per worker), logs each event again
through its own logger (so it reaches the run's `log.jsonl` and the parent's view: a shard's
end line, the shards bar) and mirrors each bar in its own view. Any other output of the
worker (a traceback, a library's warning) is kept in the worker's own log file, whose last
line names what went wrong when the worker dies.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import IO, Any

from runner.console.view import ConsoleView, ProgressBar, progress

__all__ = ["RELAY_KEY", "RelayView", "pump"]

RELAY_KEY = "runner_relay"  # marks a relayed line; anything else on the pipe is raw output


class _RelayBar:
    """A bar in a worker: its changes go to the parent as relay lines."""

    def __init__(self, view: RelayView, key: int, total: int, desc: str, done: int) -> None:
        self._view, self._key, self._open = view, key, True
        view.send({"bar": "open", "id": key, "total": int(total), "desc": desc, "done": int(done)})

    def update(self, n: int = 1) -> None:
        if self._open:
            self._view.send({"bar": "advance", "id": self._key, "n": int(n)})

    def close(self) -> None:
        if self._open:
            self._open = False
            self._view.send({"bar": "close", "id": self._key})


class RelayView(ConsoleView):
    """The view of a shard worker: events and bars as JSON lines for the parent."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream, verbose=False)
        self._next_bar = 0
        self._lock = threading.Lock()

    def send(self, message: Mapping[str, Any]) -> None:
        """One relay line (a closed pipe is not an error: the parent has gone)."""
        line = json.dumps({RELAY_KEY: 1, **message}, default=str)
        with self._lock:
            self.write(line)

    def handle(self, event: Mapping[str, Any]) -> None:
        self.send({"log": dict(event)})

    def structured(self, line: str) -> None:
        """The parent renders `-v` lines itself from the relayed events."""

    def progress(self, total: int, desc: str, done: int = 0) -> ProgressBar:
        with self._lock:
            self._next_bar += 1
            key = self._next_bar
        return _RelayBar(self, key, total, desc, done)


def _relayed(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and message.get(RELAY_KEY) == 1 else None


def _relog(log: Any, event: Mapping[str, Any]) -> None:
    fields = {k: v for k, v in event.items() if k not in ("event", "level", "timestamp")}
    level = logging.getLevelName(str(event.get("level", "info")).upper())
    log.log(level if isinstance(level, int) else logging.INFO, str(event.get("event", "worker_event")), **fields)


def pump(stream: IO[str], log: Any, raw: IO[str],
         on_event: Callable[[Mapping[str, Any]], None] | None = None) -> None:
    """Read a worker's pipe to its end: log relayed events again through `log` (then call
    `on_event`), mirror its bars in this process's view, write every other line to `raw`."""
    bars: dict[Any, ProgressBar] = {}
    try:
        for line in stream:
            message = _relayed(line)
            if message is None:
                raw.write(line)
                raw.flush()
            elif "log" in message:
                _relog(log, message["log"])
                if on_event is not None:
                    on_event(message["log"])
            elif message.get("bar") == "open":
                bars[message["id"]] = progress(message["total"], message["desc"], message["done"])
            elif message.get("bar") == "advance" and message.get("id") in bars:
                bars[message["id"]].update(message["n"])
            elif message.get("bar") == "close" and message.get("id") in bars:
                bars.pop(message["id"]).close()
    finally:
        for bar in bars.values():
            bar.close()
