"""Gates: evaluate checks and write the review packet (JSON + Markdown).

The packet is what a reviewer, a person or an LLM agent, decides on: each check with its value
and pass/fail; every metric of this iteration beside every earlier iteration's; the parameter
diff against the previous iteration; sample records from the phase before the gate; and the
review material (`review.md` plus what it links) that phase wrote, if any, and its
`headline.md` first of all (what the reviewer must read before the numbers); the decisions so
far and what an ITERATE may change. `packet_sha256` hashes the packet's JSON without that
field, so `decide --packet` can pin what was reviewed. Beside `packet.json` and `packet.md`,
`packet.html` shows the same packet as one self-contained page (`html_page`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from runner.machine import CheckOutcome, RunState
from runner.review.html_page import REVIEW_JSON, write_html
from runner.spec import parse_check
from runner.store.atomic import canonical_json, write_atomic, write_json_atomic

__all__ = ["SAMPLE_COUNT", "build_packet", "evaluate_checks", "flatten", "render_markdown", "write_packet"]

SAMPLE_COUNT = 5


def evaluate_checks(state: RunState, checks: list[str]) -> list[CheckOutcome]:
    """Each check against the latest (run or reused) instance of its phase; missing fails."""
    outcomes = []
    for expr in checks:
        check = parse_check(expr)
        inst = state.latest_instance(check.phase)
        metrics = {check.phase: inst.metrics if inst is not None else {}}
        value = check.metric_of(metrics)
        passed = check.evaluate(metrics)
        outcomes.append(CheckOutcome(expr=expr, value=value, passed=bool(passed)))
    return outcomes


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted path (`response.temperature`)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _param_diff(before: dict[str, Any] | None, after: dict[str, Any]) -> list[dict[str, Any]]:
    if before is None:
        return []
    old, new = flatten(before), flatten(after)
    return [
        {"path": p, "before": old.get(p), "after": new.get(p)}
        for p in sorted(set(old) | set(new))
        if old.get(p) != new.get(p)
    ]


def _metrics_by_iteration(state: RunState) -> dict[str, dict[str, dict[str, float]]]:
    table: dict[str, dict[str, dict[str, float]]] = {}
    for inst in state.phases:
        if inst.status in ("succeeded", "reused"):
            table.setdefault(inst.name, {})[str(inst.iteration)] = dict(inst.metrics)
    return table


def build_packet(
    state: RunState,
    gate: str,
    checks: list[CheckOutcome],
    previous_params: dict[str, Any] | None,
    samples_phase: str | None,
    samples: list[dict[str, Any]],
    review_md: str | None,
    may_set: list[str] | None = None,
    headline_md: str | None = None,
) -> dict[str, Any]:
    """The packet as a JSON-able dict, `packet_sha256` included; `may_set` None: everything;
    `headline_md` (the phase's `headline.md`, e.g. the critics' figures in words) is what the
    packet opens with."""
    packet: dict[str, Any] = {
        "run_id": state.run_id,
        "gate": gate,
        "iteration": state.iteration,
        "checks": [c.model_dump(mode="json") for c in checks],
        "all_passed": all(c.passed for c in checks),
        "metrics": _metrics_by_iteration(state),
        "params": state.params,
        "param_diff": _param_diff(previous_params, state.params),
        "samples": {"phase": samples_phase, "records": samples[:SAMPLE_COUNT]},
        "review": review_md,
        "decisions": [d.model_dump(mode="json") for d in state.decisions],
        "may_set": sorted(may_set) if may_set is not None else None,
    }
    if headline_md:
        packet["headline"] = headline_md
    packet["packet_sha256"] = hashlib.sha256(canonical_json(packet)).hexdigest()
    return packet


def _fmt(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_markdown(packet: dict[str, Any]) -> str:
    """The packet for a person: checks, metrics by iteration, parameter diff, samples."""
    lines = [f"# Gate `{packet['gate']}`, iteration {packet['iteration']} (run `{packet['run_id']}`)", ""]
    verdict = "all checks pass" if packet["all_passed"] else "some checks FAIL"
    lines += [f"**{verdict}** · packet_sha256 `{packet['packet_sha256']}`", ""]
    if packet.get("headline"):
        lines += [packet["headline"].strip(), ""]
    lines += ["## Checks", ""]
    lines += ["| check | value | result |", "|---|---|---|"]
    for c in packet["checks"]:
        lines.append(f"| `{c['expr']}` | {_fmt(c['value'])} | {'pass' if c['passed'] else 'FAIL'} |")
    lines += ["", "## Metrics by iteration", ""]
    for phase, by_iter in packet["metrics"].items():
        iters = sorted(by_iter, key=int)
        names = sorted({m for it in iters for m in by_iter[it]})
        if not names:
            continue
        lines += [f"### {phase}", "", "| metric | " + " | ".join(f"iter {i}" for i in iters) + " |"]
        lines.append("|---|" + "---|" * len(iters))
        for m in names:
            lines.append(f"| {m} | " + " | ".join(_fmt(by_iter[i].get(m)) for i in iters) + " |")
        lines.append("")
    lines += ["## Parameter changes since the previous iteration", ""]
    if packet["param_diff"]:
        lines += ["| parameter | before | after |", "|---|---|---|"]
        lines += [f"| `{d['path']}` | {_fmt(d['before'])} | {_fmt(d['after'])} |" for d in packet["param_diff"]]
    else:
        lines.append("none (first iteration, or no parameter changed)")
    samples = packet["samples"]
    lines += ["", f"## Sample records from `{samples['phase']}`", ""]
    for rec in samples["records"]:
        lines += ["```json", json.dumps(rec, ensure_ascii=False, indent=1)[:2000], "```"]
    if packet.get("review"):
        lines += ["", "## Review material from the phase before the gate", "", packet["review"]]
    return "\n".join(lines) + "\n"


def write_packet(
    gate_dir: Path, packet: dict[str, Any], review_assets: Path | None, state_dir: Path | None = None
) -> None:
    """Write packet.json, packet.md and packet.html; copy the phase's PNGs and review.json.

    `state_dir` goes into the page's ready-to-copy commands as `--state-dir`.
    """
    gate_dir.mkdir(parents=True, exist_ok=True)
    if review_assets is not None and review_assets.is_dir():
        for asset in [*sorted(review_assets.glob("*.png")), review_assets / REVIEW_JSON]:
            if asset.is_file():
                shutil.copyfile(asset, gate_dir / asset.name)
    write_json_atomic(gate_dir / "packet.json", packet)
    write_atomic(gate_dir / "packet.md", render_markdown(packet).encode())
    write_html(gate_dir, packet, state_dir=state_dir)
