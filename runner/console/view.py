"""The console view of a run: what a person sees, fed by the run's structured log events.

The engine only logs (see `logs.py`); the active view turns those events into what a person
reads. There is one active view per process at most:

* `LineView` (no terminal: CI, pipes, nohup): one line per phase start or end, at most
  `MAX_LINE` characters, with the metrics that matter; the gate's check table and commands.
* `LiveView` (`live.py`, on a terminal): a rich live table of the phases and progress bars.
* `RelayView` (`relay.py`, in a shard worker process): events and progress as JSON lines for
  the parent process's view.

`progress(total, desc)` hands out a bar from the active view; with none, or without a
terminal, it is a no-op, so phases can always ask for one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from runner.console.summary import MAX_LINE, clip, format_duration, key_metrics

__all__ = [
    "ConsoleView",
    "LineView",
    "NullProgress",
    "ProgressBar",
    "StepInfo",
    "active_view",
    "console_mode",
    "progress",
    "set_view",
    "use_view",
]


class ProgressBar(Protocol):
    """What `progress()` returns: count items as they finish, close at the end."""

    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """A bar that shows nothing (no terminal, no view)."""

    def update(self, n: int = 1) -> None:
        """Nothing to count."""

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class StepInfo:
    """A step of the run's plan as the console shows it: a phase (with its kind) or a gate.

    `status`, `wall_s` and `metrics` carry what a resumed run already did in this iteration.
    """

    name: str
    kind: str  # the phase's `uses`, "shell" for a `run:` phase, "gate" for a gate
    status: str = "pending"
    wall_s: float | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)


class ConsoleView:
    """Base view: every event a no-op except warnings and errors, shown as one short line."""

    def __init__(self, stream: IO[str] | None = None, verbose: bool = False) -> None:
        self.stream: IO[str] = stream if stream is not None else sys.stderr
        self.verbose = verbose
        self.kinds: dict[str, str] = {}

    def begin(self, run_id: str, steps: Sequence[StepInfo]) -> None:
        """The run and its plan, before the engine drives it."""
        self.kinds.update({s.name: s.kind for s in steps if s.kind != "gate"})

    def handle(self, event: Mapping[str, Any]) -> None:
        """One structured log event (already written to log.jsonl)."""
        if not self.verbose and event.get("level") in ("warning", "error", "critical"):
            self.write(generic_line(event))

    def structured(self, line: str) -> None:
        """A rendered structured log line (`-v`)."""
        self.write(line)

    def progress(self, total: int, desc: str, done: int = 0) -> ProgressBar:
        """A bar for batched work; none by default."""
        return NullProgress()

    def write(self, line: str) -> None:
        """Write one line to the console stream; a console that went away is not an error."""
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """End the view (final frame, gate table)."""


def generic_line(event: Mapping[str, Any]) -> str:
    """An event no view knows, as `level: event key=value ...` cut to `MAX_LINE`."""
    skip = {"event", "level", "timestamp", "run_id"}
    pairs = " ".join(f"{k}={v}" for k, v in event.items() if k not in skip)
    return clip(f"{event.get('level', 'info')}: {event.get('event')} {pairs}".rstrip())


def _clock(event: Mapping[str, Any]) -> str:
    """`HH:MM:SS` of the event's ISO timestamp (UTC), for line-mode logs read later."""
    stamp = str(event.get("timestamp", ""))
    return stamp[11:19] if len(stamp) >= 19 else ""


def _metrics_text(kind: str | None, metrics: Mapping[str, Any]) -> str:
    return "  ".join(f"{label} {value}" for label, value in key_metrics(kind, metrics or {}))


class LineView(ConsoleView):
    """No terminal: one line per phase start or end, the gate table, nothing drawn."""

    def handle(self, event: Mapping[str, Any]) -> None:
        name = event.get("event")
        phase = str(event.get("phase", ""))
        kind = event.get("kind") or self.kinds.get(phase)
        at = _clock(event)
        if name == "phase_started":
            attempt = event.get("attempt", 1)
            again = f" (attempt {attempt})" if isinstance(attempt, int) and attempt > 1 else ""
            self.write(clip(f"{at} ▶ {phase} started{again}"))
        elif name == "phase_finished":
            dur = format_duration(event.get("duration_s"))
            self.write(clip(f"{at} ✓ {phase} {dur}  {_metrics_text(kind, event.get('metrics') or {})}".rstrip()))
        elif name == "phase_failed":
            head = f"{at} ✗ {phase} failed after {format_duration(event.get('duration_s'))}: "
            tail = f" → {event['hint']}" if event.get("hint") else ""
            error = " ".join(str(event.get("error", "")).split())  # one line, whatever the error held
            self.write(clip(head + clip(error, max(20, MAX_LINE - len(head) - len(tail))) + tail))
        elif name == "phase_reused":
            metrics = _metrics_text(kind, event.get("metrics") or {})
            self.write(clip(f"{at} ↺ {phase} reused from iteration {event.get('source_iteration')}  {metrics}".rstrip()))
        elif name == "shard_done":
            of, took = event.get("shards"), event.get("duration_s")
            self.write(clip(f"{at}   {phase} shard {event.get('shard')}{f' of {of}' if of else ''} done"
                            + (f" {format_duration(took)}" if took is not None else "")))
        elif name == "gate_reached":
            from runner.console.tables import gate_lines  # noqa: PLC0415 - rich only at a gate

            for line in gate_lines(event):
                self.write(line)
        elif name == "decision_applied":
            self.write(clip(f"{at} → {event.get('decision')} at gate {event.get('gate')} "
                            f"by {event.get('reviewer')}"))
        elif name == "waiting_for_decision":
            self.write(clip(f"{at} waiting for a decision at gate {event.get('gate')} (Ctrl-C stops waiting)"))
        elif name == "run_completed":
            self.write(clip(f"{at} ✓ run {event.get('run_id', '')} completed"))
        else:
            super().handle(event)


_active: ConsoleView | None = None


def active_view() -> ConsoleView | None:
    """The view events go to, or None (then only warnings and errors are shown)."""
    return _active


def set_view(view: ConsoleView | None) -> ConsoleView | None:
    """Make `view` the active one; return the previous one."""
    global _active
    previous, _active = _active, view
    return previous


@contextmanager
def use_view(view: ConsoleView) -> Iterator[ConsoleView]:
    """`view` active for the block, closed (final frame drawn) at its end, even on error."""
    previous = set_view(view)
    try:
        yield view
    finally:
        try:
            view.close()
        finally:
            set_view(previous)


def console_mode(stream: IO[str] | None = None) -> str:
    """`live` on a terminal, else `lines`; `RUNNER_CONSOLE=lines` (or `live`) decides instead."""
    forced = os.environ.get("RUNNER_CONSOLE", "auto").strip().lower()
    if forced in ("live", "lines"):
        return forced
    stream = stream if stream is not None else sys.stderr
    try:
        return "live" if stream.isatty() and os.environ.get("TERM") != "dumb" else "lines"
    except (AttributeError, ValueError, OSError):
        return "lines"


def progress(total: int, desc: str, done: int = 0) -> ProgressBar:
    """A progress bar of the active view (a no-op without one or without a terminal)."""
    view = _active
    return view.progress(total, desc, done) if view is not None else NullProgress()
