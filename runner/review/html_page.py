"""The review packet as one self-contained HTML page (`packet.html`, `runner gate --html`).

Everything the page shows comes from the packet, the PNGs beside it and the phase's
`review.json` (structured samples and plot titles, when the phase before the gate wrote one);
nothing is fetched: the CSS is inline, images are `data:` URIs, and there is no script at all.
A Content-Security-Policy that allows only inline styles and `data:` images makes a browser
refuse anything else even if some text slipped through unescaped. Record text is model
output, and reasons, parameters and metric names are user input: every such string goes
through `esc` (`html.escape` with quotes), and nothing else is interpolated. The page's layout
reads top to bottom as a reviewer works: the verdict, the checks, the plots, the metrics and
parameter changes, sample records, the decisions so far, then the commands to decide with.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from runner.review.html_parts import CSS, decide_commands, fmt, table
from runner.store.atomic import write_atomic

__all__ = ["HTML_NAME", "REVIEW_JSON", "SELF_TEST_METRICS", "esc", "render_html", "write_html"]

HTML_NAME = "packet.html"
REVIEW_JSON = "review.json"
# A critic phase's self-test figures, shown in the verdict when its metrics carry them.
SELF_TEST_METRICS = ("probe_auc", "probe_accuracy", "label_bias")
_CRITIC_METRICS = ("scored", "acceptance", *SELF_TEST_METRICS)
_SNIPPET = 1200
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(value: Any) -> str:
    """`value` as text safe inside an element or a quoted attribute."""
    return html.escape(str(value), quote=True)


def _verdict(packet: dict[str, Any]) -> str:
    checks = packet["checks"]
    failing = [c for c in checks if not c["passed"]]
    if not checks:
        head, cls = "No checks at this gate", "pass"
    elif failing:
        head, cls = f"{len(failing)} of {len(checks)} checks FAIL", "fail"
    else:
        head, cls = f"All {len(checks)} checks pass", "pass"
    parts = [f'<section class="verdict {cls}"><h2>{esc(head)}</h2>']
    if failing:
        items = "".join(f"<li><code>{esc(c['expr'])}</code>: the value is "
                        f"<b>{esc(fmt(c['value']))}</b></li>" for c in failing)
        parts.append(f"<ul>{items}</ul>")
    parts.append(_critic_figures(packet))
    parts.append('<p><a href="#decide">The commands to decide ↓</a></p></section>')
    return "".join(parts)


def _critic_figures(packet: dict[str, Any]) -> str:
    """Each critic phase's acceptance, and its self-test figures where any critic has them."""
    now = str(packet["iteration"])
    critics = {phase: by_iter.get(now, {}) for phase, by_iter in packet["metrics"].items()}
    critics = {phase: m for phase, m in critics.items()
               if any(k in m for k in SELF_TEST_METRICS) or {"scored", "acceptance"} <= set(m)}
    if not critics:
        return ""
    shown = [k for k in _CRITIC_METRICS if any(k in m for m in critics.values())]
    rows = [[esc(phase), *(esc(fmt(m[k])) if k in m else "—" for k in shown)]
            for phase, m in critics.items()]
    note = "" if any(k in shown for k in SELF_TEST_METRICS) else (
        '<p class="muted">No self-test figures (probe_auc, probe_accuracy, label_bias) '
        "in these critics' metrics.</p>")
    return "<h3>Critics</h3>" + table(["critic phase", *shown], rows, numeric_from=1) + note


def _checks(packet: dict[str, Any]) -> str:
    rows = [[f"<code>{esc(c['expr'])}</code>", esc(fmt(c["value"])),
             '<span class="ok">✓ pass</span>' if c["passed"] else '<span class="bad">✗ FAIL</span>']
            for c in packet["checks"]]
    body = table(["check", "value", "result"], rows) if rows else "<p>(none)</p>"
    return f"<section><h2>Checks</h2>{body}</section>"


def _plots(images: list[tuple[str, str, bytes]]) -> str:
    if not images:
        return ""
    figures = "".join(
        f'<figure><img alt="{esc(title)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode("ascii")}"><figcaption>{esc(title)}</figcaption></figure>'
        for _, title, data in images
    )
    return f'<section><h2>Plots</h2><div class="plots">{figures}</div></section>'


def _metrics(packet: dict[str, Any]) -> str:
    checked = {c["expr"].split(".", 1)[0] for c in packet["checks"]}
    blocks = []
    for phase, by_iter in packet["metrics"].items():
        iters = sorted(by_iter, key=int)
        names = sorted({m for it in iters for m in by_iter[it]})
        if not names:
            continue
        rows = []
        for name in names:
            values = [by_iter[i].get(name) for i in iters]
            changed = len(values) > 1 and values[-1] != values[-2]
            cells = [esc(fmt(v)) for v in values]
            if changed:
                cells[-1] = f'<span class="changed">{cells[-1]}</span>'
            rows.append([esc(name), *cells])
        grid = table(["metric", *(f"iteration {esc(i)}" for i in iters)], rows, numeric_from=1)
        opened = " open" if phase in checked else ""
        blocks.append(f"<details{opened}><summary>{esc(phase)}</summary>{grid}</details>")
    return "<section><h2>Metrics by iteration</h2>" + "".join(blocks) + "</section>"


def _params(packet: dict[str, Any]) -> str:
    diff = packet.get("param_diff") or []
    if diff:
        rows = [[f"<code>{esc(d['path'])}</code>", esc(fmt(d["before"])), esc(fmt(d["after"]))]
                for d in diff]
        body = table(["parameter", "before", "after"], rows)
    else:
        body = "<p>None: the first iteration, or no parameter changed.</p>"
    full = esc(json.dumps(packet.get("params", {}), indent=2, ensure_ascii=False, default=str))
    return ("<section><h2>Parameter changes since the previous iteration</h2>" + body
            + f"<details><summary>all parameters</summary><pre>{full}</pre></details></section>")


def _text_block(label: str, text: Any) -> str:
    if text is None:
        return ""
    text = str(text)
    more = f" … ({len(text) - _SNIPPET} more characters)" if len(text) > _SNIPPET else ""
    return f'<div class="label">{esc(label)}</div><pre>{esc(text[:_SNIPPET])}{esc(more)}</pre>'


def _record_card(rec: dict[str, Any]) -> str:
    head = [f"<code>{esc(rec.get('id'))}</code>"]
    for key in ("p_a", "margin", "class"):
        if rec.get(key) is not None:
            head.append(f"{esc(key)} {esc(fmt(rec[key]))}")
    if "instruction" in rec or "response" in rec:
        body = _text_block("instruction", rec.get("instruction")) + _text_block("response", rec.get("response"))
    else:
        body = _text_block("record", json.dumps(rec, indent=1, ensure_ascii=False, default=str))
    return f'<div class="card"><div class="head">{" · ".join(head)}</div>{body}</div>'


def _column(title: str, records: list[dict[str, Any]]) -> str:
    cards = "".join(_record_card(r) for r in records) or '<p class="muted">(none)</p>'
    return f'<div><h4>{esc(title)} ({len(records)})</h4>{cards}</div>'


def _samples(packet: dict[str, Any], review: dict[str, Any] | None) -> str:
    groups = (review or {}).get("samples") or {}
    parts = ["<section><h2>Sample records</h2>"]
    if groups:
        for role, picks in groups.items():
            parts.append(f"<h3>{esc(role)}</h3><div class=\"columns\">"
                         + _column("accepted", picks.get("accept", []))
                         + _column("rejected", picks.get("reject", [])) + "</div>")
    else:
        samples = packet.get("samples") or {}
        records = samples.get("records") or []
        kept = [r for r in records if r.get("keep", True) is not False]
        dropped = [r for r in records if r.get("keep", True) is False]
        parts.append(f"<h3>from {esc(samples.get('phase'))}</h3><div class=\"columns\">"
                     + _column("kept", kept) + _column("not kept", dropped) + "</div>")
    parts.append("</section>")
    return "".join(parts)


def _decisions(decisions: list[dict[str, Any]]) -> str:
    rows = [[esc(d.get("at", "")), esc(d.get("gate")), esc(d.get("iteration")),
             f"<b>{esc(d.get('decision'))}</b>", esc(d.get("reviewer")), esc(d.get("reason")),
             esc(", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in (d.get("set") or {}).items())),
             "yes" if d.get("override_checks") else ""]
            for d in decisions]
    heads = ["at", "gate", "iteration", "decision", "reviewer", "reason", "set", "override"]
    body = table(heads, rows) if rows else "<p>No decisions yet in this run.</p>"
    return f"<section><h2>Decision history</h2>{body}</section>"


def _commands(packet: dict[str, Any], decisions: list[dict[str, Any]], state_dir: Path | None) -> str:
    taken = [d for d in decisions
             if d.get("gate") == packet["gate"] and d.get("iteration") == packet["iteration"]]
    parts = ['<section id="decide"><h2>Decide</h2>']
    if taken:
        parts.append(f"<p>Decided already: <b>{esc(taken[-1].get('decision'))}</b> by "
                     f"{esc(taken[-1].get('reviewer'))}. Continue the run with:</p>")
    else:
        parts.append("<p>Copy one, fill in the reason, run it, then resume. <code>--packet</code> "
                     "pins the decision to this very packet.</p>")
    for label, command in decide_commands(packet, state_dir, decided=bool(taken)):
        parts.append(f'<div class="label">{esc(label)}</div><pre class="cmd">{esc(command)}</pre>')
    parts.append("</section>")
    return "".join(parts)


def render_html(
    packet: dict[str, Any],
    images: list[tuple[str, str, bytes]],
    review: dict[str, Any] | None,
    decisions: list[dict[str, Any]],
    state_dir: Path | None = None,
) -> str:
    """The page; `images` are (file name, title, PNG bytes); pure (no I/O)."""
    title = f"Gate {packet['gate']}, iteration {packet['iteration']} (run {packet['run_id']})"
    body = "".join([
        f"<header><h1>{esc(title)}</h1><p class=\"muted\">packet_sha256 "
        f"<code>{esc(packet.get('packet_sha256', ''))}</code></p></header>",
        _verdict(packet), _checks(packet), _plots(images), _metrics(packet), _params(packet),
        _samples(packet, review), _decisions(decisions), _commands(packet, decisions, state_dir),
    ])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{esc(_CSP)}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def _read_review(gate_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((gate_dir / REVIEW_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _images(gate_dir: Path, review: dict[str, Any] | None) -> list[tuple[str, str, bytes]]:
    """The gate folder's PNGs: those `review.json` lists first, with its titles."""
    titles = {str(p.get("file")): str(p.get("title")) for p in (review or {}).get("plots", [])
              if isinstance(p, dict)}
    order = {name: n for n, name in enumerate(titles)}
    found = sorted(gate_dir.glob("*.png"), key=lambda p: (order.get(p.name, len(order)), p.name))
    return [(p.name, titles.get(p.name, p.stem.replace("_", " ")), p.read_bytes()) for p in found]


def write_html(
    gate_dir: Path,
    packet: dict[str, Any],
    decisions: list[dict[str, Any]] | None = None,
    state_dir: Path | None = None,
    target: Path | None = None,
) -> Path:
    """Render the gate folder's packet into `target` (default: `packet.html` beside it)."""
    review = _read_review(gate_dir)
    page = render_html(packet, _images(gate_dir, review), review,
                       packet.get("decisions", []) if decisions is None else decisions, state_dir)
    path = target if target is not None else gate_dir / HTML_NAME
    write_atomic(path, page.encode("utf-8"))
    return path
