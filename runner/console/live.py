"""The live view on a terminal: one row per phase (status, elapsed time, key metrics) and a
progress bar with rate and ETA for each piece of batched work, drawn by rich.

The view redraws from its own state a few times a second (rich's `Live` thread); events and
bar updates only change that state, under rich's locks, so shard-relay threads may update
bars too. At a gate the live area stops (its last frame stays on the screen) and the gate's
check table and next commands are printed below it; a run that goes on after the gate
(`--wait`) starts a new live area for the phases that follow.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from runner.console.summary import format_duration, key_metrics
from runner.console.view import ConsoleView, ProgressBar, StepInfo, generic_line

__all__ = ["LiveView"]


class _RateColumn(ProgressColumn):
    """Items per second over rich's recent window (so skipped, resumed work does not count)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} it/s" if speed else "- it/s", style="dim")


@dataclass
class _Row:
    name: str
    kind: str
    status: str = "pending"
    started: float | None = None  # time.monotonic() when it started in this process
    wall_s: float | None = None
    detail: str = ""
    spinner: Spinner = field(default_factory=lambda: Spinner("dots", style="yellow"))


_ICONS = {"pending": ("·", "dim"), "succeeded": ("✓", "green"), "reused": ("↺", "cyan"),
          "failed": ("✗", "bold red"), "gate": ("⏸", "yellow"), "passed": ("✓", "green")}


class _Bar:
    """A rich progress task; removed from the view when closed."""

    def __init__(self, progress: Progress, total: int, desc: str, done: int) -> None:
        self._progress = progress
        self._task: TaskID | None = progress.add_task(escape(desc), total=max(0, int(total)),
                                                      completed=max(0, int(done)))

    def update(self, n: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)

    def close(self) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LiveView(ConsoleView):
    """A terminal's view of a run (rich `Live`)."""

    def __init__(self, stream: IO[str] | None = None, verbose: bool = False,
                 console: Console | None = None) -> None:
        super().__init__(stream, verbose)
        self.console = console or Console(file=self.stream, highlight=False)
        self.rows: dict[str, _Row] = {}
        self.bars = Progress(TextColumn("  {task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                             _RateColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                             console=self.console)
        self._live: Live | None = None
        self._after_gate: list[RenderableType] = []
        self._lock = threading.RLock()

    # -- the frame -------------------------------------------------------------------------
    def __rich__(self) -> RenderableType:
        table = Table.grid(padding=(0, 1))
        table.add_column(width=1, no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        table.add_column(no_wrap=True, overflow="ellipsis")
        now = time.monotonic()
        with self._lock:
            rows = list(self.rows.values())
        for row in rows:
            icon: RenderableType
            if row.status == "running":
                icon = row.spinner
                elapsed = now - row.started if row.started is not None else None
            else:
                char, style = _ICONS.get(row.status, ("?", ""))
                icon, elapsed = Text(char, style=style), row.wall_s
            shown = "" if row.kind == "gate" or row.status == "pending" else format_duration(elapsed)
            label = row.status
            if row.kind == "gate":
                label = {"gate": "awaiting decision", "passed": "proceeded"}.get(row.status, "gate")
            status = Text(label, style=_ICONS.get(row.status, ("", "yellow"))[1] or "yellow")
            table.add_row(icon, Text(row.name, style="bold"), status, shown, Text(row.detail, style="dim"))
        return Group(table, self.bars) if self.bars.tasks else table

    def _ensure_live(self) -> None:
        if self._live is None:
            self._live = Live(self, console=self.console, refresh_per_second=8, transient=False,
                              redirect_stdout=True, redirect_stderr=True)
            self._live.start()

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            with self._lock:  # a later live area shows only what happens after this point
                self.rows = {}

    # -- events ----------------------------------------------------------------------------
    def begin(self, run_id: str, steps: Sequence[StepInfo]) -> None:
        super().begin(run_id, steps)
        with self._lock:
            for step in steps:
                row = _Row(step.name, step.kind, step.status, None, step.wall_s)
                if step.status in ("succeeded", "reused"):
                    row.detail = self._metrics(step.kind, step.metrics)
                self.rows[step.name] = row
        self._ensure_live()

    def _row(self, name: str) -> _Row:
        with self._lock:
            if name not in self.rows:
                self.rows[name] = _Row(name, self.kinds.get(name, ""))
            return self.rows[name]

    def _running(self, phase: str) -> _Row | None:
        """The row an event without a known phase belongs to: the one running phase, if any
        (phases run one at a time; model code logs without the phase's name)."""
        with self._lock:
            if phase in self.rows:
                return self.rows[phase] if self.rows[phase].status == "running" else None
            running = [row for row in self.rows.values() if row.status == "running"]
        return running[0] if len(running) == 1 else None

    @staticmethod
    def _metrics(kind: str | None, metrics: Mapping[str, Any]) -> str:
        return "  ".join(f"{label} {value}" for label, value in key_metrics(kind, metrics or {}))

    def handle(self, event: Mapping[str, Any]) -> None:
        name, phase = event.get("event"), str(event.get("phase", ""))
        kind = event.get("kind") or self.kinds.get(phase)
        if name == "phase_started":
            self._ensure_live()
            row = self._row(phase)
            row.status, row.started, row.wall_s, row.detail = "running", time.monotonic(), None, ""
            if isinstance(event.get("attempt"), int) and event["attempt"] > 1:
                row.detail = f"attempt {event['attempt']}"
        elif name == "phase_finished":
            row = self._row(phase)
            row.status, row.wall_s = "succeeded", event.get("duration_s")
            row.detail = self._metrics(kind, event.get("metrics") or {})
        elif name == "phase_failed":
            row = self._row(phase)
            row.status, row.wall_s, row.detail = "failed", event.get("duration_s"), str(event.get("error", ""))
            self._after_gate.append(Text(f"✗ {phase} failed: {event.get('error')}", style="bold red"))
            if event.get("hint"):
                self._after_gate.append(Text(f"  {event['hint']}"))
        elif name == "phase_reused":
            self._ensure_live()
            row = self._row(phase)
            row.status, row.wall_s = "reused", None
            row.detail = f"from iteration {event.get('source_iteration')}  " + self._metrics(kind, event.get("metrics") or {})
        elif name == "shard_done":
            row = self._row(phase)
            row.detail = f"shard {event.get('shard')} done"
        elif name == "gate_reached":
            from runner.console.tables import gate_block  # noqa: PLC0415

            self._row(str(event.get("gate"))).status = "gate"
            self._stop_live()
            self.console.print()
            self.console.print(gate_block(event))
        elif name == "decision_applied":
            if event.get("decision") == "proceed" and str(event.get("gate")) in self.rows:
                self.rows[str(event.get("gate"))].status = "passed"
            self._print(Text(f"→ {event.get('decision')} at gate {event.get('gate')} by {event.get('reviewer')}"))
        elif name == "waiting_for_decision":
            self._print(Text(f"waiting for a decision at gate {event.get('gate')} (Ctrl-C stops waiting)",
                             style="yellow"))
        elif name == "run_completed":
            self._after_gate.append(Text(f"✓ run {event.get('run_id', '')} completed", style="bold green"))
        elif not self.verbose and event.get("level") in ("warning", "error", "critical"):
            self._print(Text(generic_line(event), style="yellow"))
        elif isinstance(name, str) and (running := self._running(phase)) is not None:
            running.detail = name.replace("_", " ")  # what the running phase did last: "model loaded"

    def _print(self, renderable: RenderableType) -> None:
        """Print above the live area (or plainly when none is running)."""
        (self._live.console if self._live is not None else self.console).print(renderable)

    def structured(self, line: str) -> None:
        self._print(Text.from_ansi(line))

    def progress(self, total: int, desc: str, done: int = 0) -> ProgressBar:
        self._ensure_live()
        return _Bar(self.bars, total, desc, done)

    def close(self) -> None:
        for task in list(self.bars.task_ids):  # bars left open by a phase that raised
            self.bars.remove_task(task)
        self._stop_live()
        for renderable in self._after_gate:
            self.console.print(renderable)
        self._after_gate = []
