"""The QC phase's review material: `review.md` with its PNG histograms and critic samples.

The engine's gate packet embeds a phase's `review.md` and copies the PNGs beside it, so the
Markdown links the images by bare file name. `review.json` holds the same samples and the
plots' titles as data, for the gate's HTML page. Plots use matplotlib's object API on an Agg
canvas, so drawing them never switches the process's global backend or needs a display.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["INSTRUCTION_TOKENS_PNG", "P_A_PNG", "REVIEW_JSON", "TOKENS_PNG", "write_review"]

TOKENS_PNG = "response_tokens.png"
INSTRUCTION_TOKENS_PNG = "instruction_tokens.png"
P_A_PNG = "critic_p_a.png"
REVIEW_JSON = "review.json"
_SNIPPET = 400
# What a sample in review.json keeps of its record (the provenance is the same for all).
_SAMPLE_FIELDS = ("id", "instruction", "response", "p_a", "margin", "verdict", "class")


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _tokens_png(path: Path, records: list[dict[str, Any]], limit: int | None, what: str) -> None:
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    values = [r.get("tokens", 0) for r in records]
    ax.hist(values, bins=min(30, max(5, len(set(values)))), color="#4477aa")
    title = f"{what.capitalize()} token lengths (n={len(values)})"
    if limit and limit <= 1.5 * max(values, default=0):
        ax.axvline(limit, color="#cc3311", linestyle="--", label=f"max_new_tokens={limit}")
        ax.legend()
    elif limit:  # far beyond the data: a line there would squeeze the histogram into a corner
        title += f"; max_new_tokens={limit}"
    ax.set_xlabel(f"generated tokens per {what}")
    ax.set_ylabel(f"{what}s")
    ax.set_title(title)
    _save(fig, path)


def _p_a_png(path: Path, critics: dict[str, list[dict[str, Any]]]) -> None:
    """One panel per critic: its debiased p(yes) distribution, accepted and rejected stacked."""
    fig = Figure(figsize=(6, 0.6 + 2.4 * len(critics)))
    for n, (role, recs) in enumerate(critics.items(), 1):
        ax = fig.add_subplot(len(critics), 1, n)
        accepted = [_p_yes(r) for r in recs if r.get("verdict") == "accept"]
        rejected = [_p_yes(r) for r in recs if r.get("verdict") != "accept"]
        ax.hist([accepted, rejected], bins=20, range=(0, 1), stacked=True,
                color=["#228833", "#bbbbbb"],
                label=[f"accepted ({len(accepted)})", f"rejected ({len(rejected)})"])
        thresholds = {r.get("provenance", {}).get("params", {}).get("confidence_threshold")
                      for r in recs} - {None}
        for th in sorted(thresholds):
            ax.axvline(th, color="#cc3311", linestyle="--")
        ax.set_title(f"{role}: p(yes), n={len(recs)} (dashed: confidence threshold)", fontsize=10)
        ax.set_ylabel("records")
        ax.legend(fontsize=8, loc="upper left")
    fig.axes[-1].set_xlabel("critic p(yes): both label orders averaged (debiased)")
    _save(fig, path)


def _p_yes(rec: dict[str, Any]) -> float:
    # Records written before debiasing existed carry only p_a.
    return float(rec.get("p_yes", rec["p_a"]))


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.4g}"


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in `text`, so no sample can break out."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def _sample_block(rec: dict[str, Any]) -> list[str]:
    body = f"### Instruction:\n{rec.get('instruction') or ''}"
    if rec.get("response") is not None:
        body += f"\n\n### Response:\n{rec['response']}"
    if len(body) > _SNIPPET:
        body = body[:_SNIPPET] + " …"
    fence = _fence(body)
    swapped = rec.get("p_a_swapped")
    raw = f"p(A) = {rec['p_a']:.3f}" + ("" if swapped is None else f" / {swapped:.3f} swapped")
    head = f"- `{rec.get('id')}` p(yes) = {_p_yes(rec):.3f} (raw {raw}), margin = {rec['margin']:.2f}"
    return [head, "", f"{fence}text", body, fence, ""]


def write_review(
    out_dir: Path,
    phase: str,
    iteration: int,
    history: dict[int, dict[str, float]],
    by_role: dict[str, list[dict[str, Any]]],
    classes: Mapping[str, Mapping[str, int]],
    samples: dict[str, dict[str, list[dict[str, Any]]]],
    limit: int | None,
    definitions: str,
    first: tuple[str, ...] = (),
) -> Path:
    """Write review.md (+ PNGs) into `out_dir` and return its path; `first` metrics lead."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# QC review: `{phase}`, iteration {iteration}", ""]
    iters = sorted(history)
    rank = {name: i for i, name in enumerate(first)}
    names = sorted({k for m in history.values() for k in m}, key=lambda k: (rank.get(k, 99), k))
    lines += ["## QC metrics by iteration", ""]
    lines.append("| metric | " + " | ".join(f"i{n}" for n in iters) + " |")
    lines.append("|---|" + "---:|" * len(iters))
    for name in names:
        cells = " | ".join(_fmt(history[n].get(name)) for n in iters)
        lines.append(f"| {name} | {cells} |")
    lines.append("")
    if classes:
        header = " | ".join(next(iter(classes.values())))
        lines += ["## Output classes", "", f"| role | {header} |", "|---|" + "---:|" * 4]
        for role, counts in classes.items():
            lines.append(f"| {role} | " + " | ".join(str(v) for v in counts.values()) + " |")
        lines.append("")
    lines += ["## Histograms", ""]
    plots: list[dict[str, str]] = []
    if by_role.get("responses"):
        _tokens_png(out_dir / TOKENS_PNG, by_role["responses"], limit, "response")
        plots.append({"file": TOKENS_PNG, "title": "Response token lengths"})
    if by_role.get("instructions"):
        _tokens_png(out_dir / INSTRUCTION_TOKENS_PNG, by_role["instructions"], None, "instruction")
        plots.append({"file": INSTRUCTION_TOKENS_PNG, "title": "Instruction token lengths"})
    critics = {r: by_role[r] for r in ("instruction_critic", "pair_critic") if by_role.get(r)}
    if critics:
        _p_a_png(out_dir / P_A_PNG, critics)
        plots.append({"file": P_A_PNG, "title": "Critic score distributions: debiased p(yes) of each critic"})
    lines += [line for plot in plots for line in (f"![{plot['title']}]({plot['file']})", "")]
    for role, picks in samples.items():
        for verdict, title in (("accept", "accepted"), ("reject", "rejected")):
            lines += [f"## {role}: {len(picks[verdict])} {title} samples", ""]
            for rec in picks[verdict]:
                lines += _sample_block(rec)
            if not picks[verdict]:
                lines += ["(none)", ""]
    lines += ["## Metric definitions", "", definitions.strip(), ""]
    path = out_dir / "review.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    data = {"phase": phase, "iteration": iteration, "plots": plots, "classes": classes,
            "samples": {role: {verdict: [{k: r[k] for k in _SAMPLE_FIELDS if k in r} for r in recs]
                               for verdict, recs in picks.items()}
                        for role, picks in samples.items()}}
    (out_dir / REVIEW_JSON).write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path
