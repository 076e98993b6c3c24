"""Each critic's figures for the gate packet, in numbers and in words.

The QC phase gathers, for every critic role, the critic phase's metrics and its probe report
(`probes.json`, written by `critic_filter`) and writes `headline.md`: the first thing the
packet shows after its verdict. Words, not just numbers, for what a reviewer must not miss:

* `probe_auc` < `NEAR_CHANCE` (0.6): the critic is near chance, so its acceptance rate tells
  nothing about the data;
* `NEAR_CHANCE` <= `probe_auc` < `WEAK` (0.75): it separates planted good from bad only weakly;
* no `probe_auc`: why (the probe set was too small, or switched off), and that a gate check on
  it fails as missing;
* |`label_bias`| >= `STRONG_BIAS` (0.2): the model prefers one label whatever it reads, so its
  raw p(A) is mostly that preference (the debiased p_yes removes it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["NEAR_CHANCE", "STRONG_BIAS", "WEAK", "critic_figures", "headline_md"]

NEAR_CHANCE = 0.6
WEAK = 0.75
STRONG_BIAS = 0.2
_PROBES = "probes.json"


def _probe_report(ctx: Any, phase: str) -> dict[str, Any] | None:
    """The critic phase's probe report (shard 0's when it ran sharded), or None."""
    try:
        folder = Path(ctx.input_dir(phase))
    except (KeyError, AttributeError, TypeError):
        return None
    for path in (folder / _PROBES, folder / "shards" / "0000" / _PROBES):
        try:
            report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return report
        except (OSError, ValueError):
            continue
    return None


def critic_figures(ctx: Any, roles: dict[str, str],
                   by_role: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One entry per critic role present: phase, acceptance, label_bias and probe figures."""
    out = []
    for role in ("instruction_critic", "pair_critic"):
        if role not in roles or not by_role.get(role):
            continue
        recs = by_role[role]
        report = _probe_report(ctx, roles[role]) or {}
        both = [r for r in recs if r.get("p_a_swapped") is not None]  # bias needs both orders
        raw = [r[k] for r in both for k in ("p_a", "p_a_swapped")]
        out.append({
            "role": role, "phase": roles[role], "scored": len(recs),
            "acceptance": sum(r.get("verdict") == "accept" for r in recs) / len(recs),
            "label_bias": sum(raw) / len(raw) - 0.5 if raw else None,
            "debiased": all(r.get("debiased", False) for r in recs),
            "probe_auc": report.get("probe_auc"), "probe_accuracy": report.get("probe_accuracy"),
            "probe_good": report.get("good"), "probe_bad": report.get("bad"),
            "left_out": report.get("left_out") if report else
            "the critic phase wrote no probe report (probes.json)",
        })
    return out


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "—" if v is None else format(v, fmt)


def _words(c: dict[str, Any]) -> list[str]:
    name, auc, acc = f"`{c['phase']}`", c["probe_auc"], c["acceptance"]
    lines = []
    if auc is None:
        lines.append(f"- {name}: **no probe figure** — {c['left_out']}. A gate check on its "
                     "`probe_auc` fails as missing.")
    elif auc < NEAR_CHANCE:
        lines.append(f"- {name} is **near chance** (probe_auc {auc:.3f}): it tells planted good "
                     "items from planted bad ones hardly better than a coin, so **its acceptance "
                     f"rate ({acc:.0%}) tells nothing** about the quality of the data.")
    elif auc < WEAK:
        lines.append(f"- {name} separates planted good from planted bad items only **weakly** "
                     f"(probe_auc {auc:.3f}): read its acceptance rate ({acc:.0%}) with care.")
    else:
        lines.append(f"- {name} separates planted good from planted bad items "
                     f"(probe_auc {auc:.3f}, accuracy at its threshold "
                     f"{_num(c['probe_accuracy'], '.0%')}).")
    bias = c["label_bias"]
    if bias is not None and abs(bias) >= STRONG_BIAS:
        which = "first" if bias > 0 else "second"
        lines.append(f"  It prefers the {which} label whatever it reads (label_bias "
                     f"{bias:+.3f}): its raw p(A) is mostly that preference, which the "
                     "debiased p_yes cancels.")
    elif not c["debiased"]:
        lines.append("  Debiasing is off (`debias: false`): its label bias is not measured.")
    return lines


def headline_md(critics: list[dict[str, Any]]) -> str:
    """The packet's opening section: a table of the critics' figures and what they mean."""
    if not critics:
        return ""
    lines = ["## Critics: can their verdicts be trusted?", "",
             "| critic | scored | acceptance | label_bias | probe_auc | probe_accuracy | probes (good/bad) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for c in critics:
        probes = "—" if c["probe_good"] is None else f"{c['probe_good']}/{c['probe_bad']}"
        lines.append(f"| `{c['phase']}` | {c['scored']} | {c['acceptance']:.0%} | "
                     f"{_num(c['label_bias'], '+.3f')} | {_num(c['probe_auc'])} | "
                     f"{_num(c['probe_accuracy'])} | {probes} |")
    lines.append("")
    for c in critics:
        lines += _words(c)
    lines += ["", "probe_auc: how often the critic's p(yes) (debiased, unless `debias: false`) "
              "ranks a planted good item "
              "(held-out gold example) above a planted bad one (made from this run's items: "
              "mismatched or cut responses, shuffled or cut instructions); 0.5 is chance.", ""]
    return "\n".join(lines)
