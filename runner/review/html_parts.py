"""Pieces of the HTML review page: the style sheet, tables, number format, decide commands.

`table` takes cells that are already HTML (the caller escapes them); the commands are plain
text, each value shell-quoted, and escaped by the page like any other text.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

__all__ = ["CSS", "decide_commands", "fmt", "table"]

CSS = """
:root { color-scheme: light; --ok: #1a7f37; --bad: #cf222e; --muted: #57606a; --line: #d0d7de; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f8fa; color: #1f2328;
  font: 15px/1.45 -apple-system, "Segoe UI", "Liberation Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 28px 40px; }
h1 { font-size: 24px; margin: 6px 0 2px; }
h2 { font-size: 19px; margin: 0 0 10px; }
h3 { font-size: 16px; margin: 14px 0 6px; }
h4 { font-size: 14px; margin: 4px 0 6px; color: var(--muted); text-transform: uppercase; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 14px 18px; margin: 14px 0; }
section.verdict.pass { border-left: 8px solid var(--ok); }
section.verdict.fail { border-left: 8px solid var(--bad); }
section.verdict.pass h2 { color: var(--ok); }
section.verdict.fail h2 { color: var(--bad); }
code, pre { font: 13px/1.4 "DejaVu Sans Mono", "Liberation Mono", Menlo, monospace; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f6f8fa;
  border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; margin: 2px 0 8px; }
pre.cmd { background: #0d1117; color: #e6edf3; user-select: all; }
table { border-collapse: collapse; margin: 4px 0 8px; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.changed { background: #fff8c5; padding: 0 3px; border-radius: 3px; }
.muted { color: var(--muted); }
details { margin: 4px 0; }
summary { cursor: pointer; font-weight: 600; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; }
figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; }
figcaption { font-size: 13px; color: var(--muted); }
.columns { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; margin: 0 0 8px; }
.card .head { font-size: 13px; color: var(--muted); margin-bottom: 4px; }
.label { font-size: 12px; color: var(--muted); margin-top: 6px; }
"""


def fmt(value: Any) -> str:
    """A metric or parameter value as a reviewer reads it (4 significant digits)."""
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def table(heads: list[str], rows: list[list[str]], numeric_from: int | None = None) -> str:
    """An HTML table of cells that are already HTML; columns from `numeric_from` align right."""
    head = "".join(f"<th>{h}</th>" for h in heads)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="num">{c}</td>' if numeric_from is not None and i >= numeric_from else f"<td>{c}</td>"
            for i, c in enumerate(row)
        ) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _leaves(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _example_set(packet: dict[str, Any]) -> str | None:
    """`PATH=VALUE` for an ITERATE example: a parameter the gate lets change, at its value now."""
    leaves = _leaves(packet.get("params") or {})
    may_set = packet.get("may_set")
    allowed = [p for p in leaves
               if may_set is None or any(p == m or p.startswith(f"{m}.") for m in may_set)]
    if not allowed:
        return None
    changed = [d["path"] for d in packet.get("param_diff") or [] if d["path"] in allowed]
    path = (changed or allowed)[0]
    return f"{path}={json.dumps(leaves[path], ensure_ascii=False, default=str)}"


def decide_commands(
    packet: dict[str, Any], state_dir: Path | None, decided: bool = False
) -> list[tuple[str, str]]:
    """(label, shell command) pairs: decide on this gate, then resume; only resume if decided."""
    run, gate = packet["run_id"], packet["gate"]
    where = f" --state-dir {shlex.quote(str(state_dir))}" if state_dir is not None else ""
    resume = ("then continue the run", f"runner resume {shlex.quote(run)}{where}")
    if decided:
        return [resume]
    def decide(decision: str, extra: str = "") -> str:
        return (f"runner decide {shlex.quote(run)} --gate {shlex.quote(gate)} --decision {decision}"
                f"{extra} --reviewer \"$USER\" --reason 'say why'"
                f" --packet {packet.get('packet_sha256', '')}{where}")

    commands = []
    if packet.get("all_passed", True):
        commands.append(("proceed: accept this iteration", decide("proceed")))
    else:
        commands.append(("proceed although checks fail (recorded as overriding them)",
                         decide("proceed", " --override-checks")))
    example = _example_set(packet)
    commands.append(("iterate: change parameters and run again (edit the value)",
                     decide("iterate", f" --set {shlex.quote(example)}" if example else "")))
    commands.append(("abort the run", decide("abort")))
    commands.append(resume)
    return commands
