"""The QC phase's review material: `review.md` with its PNG histograms and critic samples.

The engine's gate packet embeds a phase's `review.md` and copies the PNGs beside it, so the
Markdown links the images by bare file name. Plots use matplotlib's object API on an Agg
canvas, so drawing them never switches the process's global backend or needs a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["P_A_PNG", "TOKENS_PNG", "write_review"]

TOKENS_PNG = "response_tokens.png"
P_A_PNG = "critic_p_a.png"
_SNIPPET = 400


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _tokens_png(path: Path, responses: list[dict[str, Any]], limit: int | None) -> None:
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    values = [r.get("tokens", 0) for r in responses]
    ax.hist(values, bins=min(30, max(5, len(set(values)))), color="#4477aa")
    if limit:
        ax.axvline(limit, color="#cc3311", linestyle="--", label=f"max_new_tokens={limit}")
        ax.legend()
    ax.set_xlabel("generated tokens per response")
    ax.set_ylabel("responses")
    ax.set_title(f"Response token lengths (n={len(values)})")
    _save(fig, path)


def _p_a_png(path: Path, critics: dict[str, list[dict[str, Any]]]) -> None:
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    for (role, recs), colour in zip(critics.items(), ("#4477aa", "#ee7733")):
        ax.hist([_p_yes(r) for r in recs], bins=20, range=(0, 1), alpha=0.6, color=colour,
                label=f"{role} (n={len(recs)})")
        thresholds = {r.get("provenance", {}).get("params", {}).get("confidence_threshold")
                      for r in recs} - {None}
        for th in thresholds:
            ax.axvline(th, color=colour, linestyle="--")
    ax.set_xlabel("critic p(yes): both label orders averaged (debiased)")
    ax.set_ylabel("records")
    ax.set_title("Critic p(yes) (dashed: confidence threshold)")
    ax.legend()
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
    classes: dict[str, dict[str, int]],
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
    if by_role.get("responses"):
        _tokens_png(out_dir / TOKENS_PNG, by_role["responses"], limit)
        lines += [f"![Response token lengths]({TOKENS_PNG})", ""]
    critics = {r: by_role[r] for r in ("instruction_critic", "pair_critic") if by_role.get(r)}
    if critics:
        _p_a_png(out_dir / P_A_PNG, critics)
        lines += [f"![Critic p(A)]({P_A_PNG})", ""]
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
    return path
