"""Tables a person reads: a gate's checks with the next commands, and `runner status`.

Built with rich from plain data (a `gate_reached` log event, the `status --json` object), so
the console layer needs nothing from the engine. `render_text` turns any of them into plain
lines (no colour, no cursor codes) for a pipe or a file.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from runner.console.summary import (
    MAX_LINE,
    check_rows,
    format_duration,
    format_value,
    key_metrics,
    next_commands,
)

__all__ = ["gate_block", "gate_lines", "render_text", "run_list_table", "status_block"]


def render_text(renderable: RenderableType, width: int = MAX_LINE) -> list[str]:
    """`renderable` as plain text lines at most `width` wide, trailing blanks removed."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False,
                      highlight=False, emoji=False, legacy_windows=False)
    console.print(renderable)
    return [line.rstrip() for line in buffer.getvalue().splitlines()]


def gate_block(event: Mapping[str, Any]) -> RenderableType:
    """A `gate_reached` event as the verdict, the checks (✓/✗, value, threshold) and commands."""
    gate, run_id = str(event.get("gate", "?")), str(event.get("run_id", "RUN"))
    rows = check_rows(event.get("checks") or [])
    failing = sum(1 for passed, *_ in rows if not passed)
    verdict = (Text(f"{failing} of {len(rows)} checks fail", style="bold red") if failing
               else Text(f"all {len(rows)} checks pass" if rows else "no checks", style="bold green"))
    head = Text.assemble(("⏸ gate ", "bold"), (gate, "bold"), f" (iteration {event.get('iteration', '?')}): ",
                         verdict)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("threshold", no_wrap=True)
    for passed, metric, value, threshold in rows:
        mark = Text("✓", style="green") if passed else Text("✗", style="bold red")
        table.add_row(mark, escape(metric), escape(value), escape(threshold))
    parts: list[RenderableType] = [head]
    if rows:
        parts.append(table)
    if event.get("packet"):
        parts.append(Text(f"packet: {event['packet']}", style="dim"))
    parts.append(Text("next:", style="bold"))
    parts += [Text(f"  {command}", style="cyan") for command in next_commands(run_id, gate)]
    if failing:
        parts.append(Text("  (proceed while a check fails needs --override-checks)", style="dim"))
    return Group(*parts)


def gate_lines(event: Mapping[str, Any]) -> list[str]:
    """`gate_block` as plain lines for a console without a terminal."""
    return render_text(gate_block(event))


def _metrics_cell(kind: str | None, metrics: Mapping[str, Any]) -> str:
    return "  ".join(f"{label} {value}" for label, value in key_metrics(kind, metrics))


_STATUS_STYLE = {"succeeded": "green", "reused": "cyan", "failed": "bold red", "running": "yellow",
                 "completed": "green", "awaiting_decision": "yellow", "aborted": "red", "interrupted": "red"}


def status_block(data: Mapping[str, Any], kinds: Mapping[str, str]) -> RenderableType:
    """`runner status RUN_ID`: the run's line, its phases, decisions, GPU time and cost.

    `data` is the `status --json` object; `kinds` maps a phase name to its `uses` (for the
    metrics worth showing).
    """
    status = str(data.get("status"))
    head = Text.assemble(("run ", "bold"), (str(data.get("run_id")), "bold"), f" ({data.get('name')}): ",
                         (status, _STATUS_STYLE.get(status, "")), f", iteration {data.get('iteration')}")
    if data.get("pending_gate"):
        head.append(f", gate '{data['pending_gate']}' pending")
    parts: list[RenderableType] = [head]
    if data.get("failure"):
        parts.append(Text(f"failure: {data['failure']}", style="red"))
    phases = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for title, justify in (("phase", "left"), ("iter", "right"), ("status", "left"), ("time", "right"),
                           ("key metrics", "left")):
        phases.add_column(title, justify=justify, no_wrap=title != "key metrics")  # type: ignore[arg-type]
    for p in data.get("phases") or []:
        state = str(p.get("status"))
        if p.get("reused_from"):
            state += f" (i{p['reused_from']})"
        time = format_duration(p.get("wall_s")) if p.get("status") not in ("pending", "reused") else "-"
        phases.add_row(escape(str(p.get("name"))), str(p.get("iteration")),
                       Text(state, style=_STATUS_STYLE.get(str(p.get("status")), "")), time,
                       escape(_metrics_cell(kinds.get(str(p.get("name"))), p.get("metrics") or {})))
    parts.append(phases)
    decisions = data.get("decisions") or []
    if decisions:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title="decisions",
                      title_justify="left")
        for title in ("gate", "iter", "decision", "reviewer", "at", "reason / set"):
            table.add_column(title, no_wrap=title != "reason / set")
        for d in decisions:
            detail = str(d.get("reason") or "")
            if d.get("set"):
                detail += "  set " + ", ".join(f"{k}={format_value(v)}" for k, v in d["set"].items())
            if d.get("override_checks"):
                detail += "  (checks overridden)"
            if d.get("signed_by"):
                detail += f"  signed {d['signed_by']}"
            table.add_row(escape(str(d.get("gate"))), str(d.get("iteration")), str(d.get("decision")),
                          escape(str(d.get("reviewer"))), str(d.get("at", ""))[:19].replace("T", " "),
                          escape(detail))
        parts.append(table)
    else:
        parts.append(Text("decisions: none yet", style="dim"))
    for a in data.get("amendments") or []:
        parts.append(Text(f"amended {str(a.get('at', ''))[:19].replace('T', ' ')}: spec "
                          f"{str(a.get('old_sha256'))[:12]} -> {str(a.get('new_sha256'))[:12]}"))
    gpu = f"GPU time {format_duration(data.get('gpu_seconds'))}"
    if data.get("cost_usd") is not None:
        gpu += f", cost ${data['cost_usd']:.2f}"
        if data.get("max_usd") is not None:
            gpu += f" of max ${format_value(data['max_usd'])}"
    else:
        gpu += " (cost: give the spec a budget.gpu_hour_usd)"
    parts.append(Text(gpu))
    return Group(*parts)


def run_list_table(rows: Sequence[Mapping[str, Any]]) -> RenderableType:
    """`runner status`: one compact row per run."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for title in ("run", "name", "status", "iter", "gate", "phases", "GPU time"):
        table.add_column(title, no_wrap=True)
    for r in rows:
        status = str(r.get("status"))
        table.add_row(escape(str(r.get("run_id"))), escape(str(r.get("name", "-"))),
                      Text(status, style=_STATUS_STYLE.get(status, "")), str(r.get("iteration", "-")),
                      escape(str(r.get("pending_gate") or "-")), str(r.get("phases", "-")),
                      format_duration(r["gpu_seconds"]) if r.get("gpu_seconds") is not None else "-")
    return table
