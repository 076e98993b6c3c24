"""The evaluation's verdict for the release gate: per-checker pass rates and words.

`evaluate` writes two files into its folder, which the gate after it embeds in the packet:

* `headline.md` (the packet opens with it): whether the tuned model is better, worse or not
  distinguishable from the base model, in words, with the counts behind it. When the tuned
  model passes fewer items it says so plainly, also when the difference is not significant,
  and reminds that a two-sided `significant` alone would have let a worse model through.
* `review.md`: pass rates of both models for each checker (kind of instruction), so the
  reviewer sees which kinds got better or worse.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["checker_table", "verdict_words", "write_verdict"]


def checker_table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per checker: items, base and SFT pass rates, and their difference (worst first)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[str(r.get("checker"))].append(r)
    rows = []
    for name, recs in groups.items():
        base = sum(bool(r["base_pass"]) for r in recs) / len(recs)
        sft = sum(bool(r["sft_pass"]) for r in recs) / len(recs)
        rows.append({"checker": name, "items": len(recs), "base": base, "sft": sft,
                     "change": sft - base})
    return sorted(rows, key=lambda row: (row["change"], row["checker"]))


def verdict_words(metrics: dict[str, float], alpha: float) -> str:
    """The directional verdict as a sentence or two (Markdown)."""
    b, c = int(metrics["discordant_b"]), int(metrics["discordant_c"])
    base, sft = metrics["base_pass_rate"], metrics["sft_pass_rate"]
    counts = (f"base pass rate {base:.1%}, tuned {sft:.1%} (improvement {sft - base:+.1%}); "
              f"{b} item(s) only the base model passes, {c} only the tuned one")
    if metrics["regressed"]:
        return (f"**The tuned model is WORSE than the base model** ({counts}; one-sided "
                f"p = {metrics['p_regressed']:.3g} < alpha {alpha:g}). Fine-tuning made it "
                "significantly worse: do not release it. (`significant` = "
                f"{int(metrics['significant'])} says only that the two models differ.)")
    if metrics["improved"]:
        return (f"**The tuned model is better than the base model** ({counts}; one-sided "
                f"p_improved = {metrics['p_improved']:.3g} < alpha {alpha:g}).")
    if sft < base:
        return (f"**The tuned model is worse than the base model**, though not significantly "
                f"at alpha {alpha:g} ({counts}; p_regressed = {metrics['p_regressed']:.3g}). "
                "No improvement is shown.")
    return (f"**No significant improvement** ({counts}; p_improved = "
            f"{metrics['p_improved']:.3g}, alpha {alpha:g}).")


def write_verdict(out_dir: Path, records: list[dict[str, Any]], metrics: dict[str, float],
                  alpha: float) -> None:
    """Write headline.md and review.md (see the module docstring) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    head = ["## Evaluation: is the tuned model better?", "", verdict_words(metrics, alpha), ""]
    (out_dir / "headline.md").write_text("\n".join(head), encoding="utf-8")
    lines = ["# Evaluation: pass rates by checker", "",
             "| checker | items | base | tuned | change |", "|---|---:|---:|---:|---:|"]
    for row in checker_table(records):
        lines.append(f"| `{row['checker']}` | {row['items']} | {row['base']:.0%} | "
                     f"{row['sft']:.0%} | {row['change']:+.0%} |")
    worse = [row["checker"] for row in checker_table(records) if row["change"] < 0]
    lines += ["", ("Kinds of instruction the tuned model does worse on: "
                   + ", ".join(f"`{w}`" for w in worse) + ".") if worse
              else "The tuned model does no worse on any kind of instruction.", ""]
    (out_dir / "review.md").write_text("\n".join(lines), encoding="utf-8")
