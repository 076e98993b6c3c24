"""The `qc` phase: quality metrics of a Stage-1 pilot and the gate's review material.

Roles (`with: phases: {instructions, instruction_critic, responses, pair_critic}` -> phase
names; by default found among the earlier phases by the `stage` of their records). A metric
whose role is absent, or whose denominator is zero, is left out, so a gate check on it shows
as missing rather than passing on no data. Output classes are those of `cleaning.py`.

* `runaway_rate` = response records of class `runaway` / all response records (every
  generated response, whatever its class).
* `token_limit_rate` = response records of class `token_limit` / all response records.
* `delimiter_leakage` = number of records of class `leakage` in the instructions and the
  responses phases together (a count, not a rate: any leaked delimiter reaches the data).
* `median_response_tokens` = median, over all response records, of `tokens`: the tokens the
  model generated for the response, EOS excluded, stop-string tokens included.
* `instruction_acceptance` = instruction-critic records with verdict `accept` / all records
  that critic scored (its unique, clean instructions).
* `pair_acceptance` = the same for the pair critic.
* `instruction_runaway_rate`, `instruction_token_limit_rate` = as above, over the
  instruction-generation records.
* `count_<phase>` for each earlier phase = records it passes on: for an instruction
  generator its clean, deduplicated instructions (at most its `count`); otherwise the records
  with `keep: true` (critics: accepted), or all records when they carry no `keep`.

Review material written into the phase's folder: `headline.md` (each critic's acceptance,
label bias and probe figures, with words where a critic is near chance; the packet opens with
it, see `critic_review.py`), `review.md` (embedded in the gate packet),
`response_tokens.png`, `critic_p_a.png` (the debiased p_yes), samples of each critic, and the
QC metrics of every iteration side by side (earlier ones from
`run_dir/phases/<qc phase>.i<N>/metrics.json`).
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path
from typing import Any

from runner.errors import PhaseError
from runner.llm.builtin import STAGES, input_names, options_of, stage_of, usable_instructions
from runner.llm.stage1.critic_review import critic_figures, headline_md
from runner.llm.stage1.options import QcOptions
from runner.llm.text import cleaning
from runner.llm.text.cleaning import CLASSES

__all__ = ["GATE_METRICS", "HEADLINE_FILE", "compute_metrics", "qc"]

HEADLINE_FILE = "headline.md"  # the packet opens with it (runner/review/gates.py)

# The metrics the Stage-1 gate checks, listed first in the review table.
GATE_METRICS = ("runaway_rate", "token_limit_rate", "delimiter_leakage", "median_response_tokens",
                "instruction_acceptance", "pair_acceptance")
_SAMPLES = 5


def _rate(records: list[dict[str, Any]], cls: str) -> float | None:
    return sum(r.get("class") == cls for r in records) / len(records) if records else None


def _acceptance(records: list[dict[str, Any]]) -> float | None:
    return sum(r.get("verdict") == "accept" for r in records) / len(records) if records else None


def _count(records: list[dict[str, Any]]) -> int:
    if stage_of(records) == "instructions":
        return len(usable_instructions(records)[0])
    return sum(1 for r in records if r.get("keep", True))


def compute_metrics(
    by_role: dict[str, list[dict[str, Any]]], by_phase: dict[str, list[dict[str, Any]]]
) -> dict[str, float]:
    """The QC metrics (see the module docstring) of records grouped by role and by phase."""
    ins, resp = by_role.get("instructions", []), by_role.get("responses", [])
    found: dict[str, float | None] = {
        "runaway_rate": _rate(resp, "runaway"),
        "token_limit_rate": _rate(resp, "token_limit"),
        "delimiter_leakage": (
            sum(r.get("class") == "leakage" for r in ins + resp)
            if "instructions" in by_role or "responses" in by_role else None
        ),
        "median_response_tokens": statistics.median(r["tokens"] for r in resp) if resp else None,
        "instruction_acceptance": _acceptance(by_role.get("instruction_critic", [])),
        "pair_acceptance": _acceptance(by_role.get("pair_critic", [])),
        "instruction_runaway_rate": _rate(ins, "runaway"),
        "instruction_token_limit_rate": _rate(ins, "token_limit"),
    }
    metrics = {k: float(v) for k, v in found.items() if v is not None}
    metrics.update({f"count_{name}": float(_count(recs)) for name, recs in by_phase.items()})
    return metrics


def _roles(ctx: Any, o: QcOptions) -> dict[str, str]:
    if o.phases:  # roles and names checked by QcOptions
        return {str(k): str(v) for k, v in o.phases.items()}
    roles: dict[str, str] = {}
    for name in input_names(ctx):
        try:
            stage = stage_of(list(ctx.input(name)))
        except Exception:  # a phase without records
            continue
        if stage in STAGES:
            roles[stage] = str(name)  # the latest phase of each role wins
    if not roles:
        raise PhaseError(ctx.phase, "with.phases is required: {instructions: ..., "
                         "instruction_critic: ..., responses: ..., pair_critic: ...}")
    return roles


def qc(ctx: Any) -> dict[str, float]:
    """Compute the QC metrics and write the review material into `ctx.output_dir`."""
    from runner.llm.stage1.review import write_review  # noqa: PLC0415 - matplotlib only when a review is written

    o = options_of(ctx, QcOptions)
    roles = _roles(ctx, o)
    names = input_names(ctx)
    names += [n for n in roles.values() if n not in names]
    by_phase: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        try:
            by_phase[name] = list(ctx.input(name))
        except Exception:  # a shell phase without records has no count
            if name in roles.values():
                raise
    by_role = {role: by_phase[name] for role, name in roles.items()}
    metrics = compute_metrics(by_role, by_phase)
    limit = o.max_new_tokens
    if limit is None and by_role.get("responses"):
        params = by_role["responses"][0].get("provenance", {}).get("params", {})
        limit = params.get("max_new_tokens")
    history = _history(ctx, metrics)
    samples = {
        role: _samples(by_role[role], ctx.seed)
        for role in ("instruction_critic", "pair_critic") if by_role.get(role)
    }
    classes: dict[str, dict[str, int]] = {
        role: {c: sum(r.get("class") == c for r in by_role[role]) for c in CLASSES}
        for role in ("instructions", "responses") if role in by_role
    }
    definitions = f"{__doc__}\n\n{cleaning.__doc__}"
    headline = headline_md(critic_figures(ctx, roles, by_role))
    (Path(ctx.output_dir) / HEADLINE_FILE).write_text(headline, encoding="utf-8")
    write_review(Path(ctx.output_dir), ctx.phase, ctx.iteration, history, by_role, classes,
                 samples, limit, definitions, GATE_METRICS)
    ctx.log.info("qc_done", phase=ctx.phase, **{k: round(v, 4) for k, v in metrics.items()})
    return metrics


def _history(ctx: Any, current: dict[str, float]) -> dict[int, dict[str, float]]:
    """QC metrics of every iteration so far: earlier ones as the engine stored them."""
    history: dict[int, dict[str, float]] = {}
    for n in range(1, int(ctx.iteration)):
        path = Path(ctx.run_dir) / "phases" / f"{ctx.phase}.i{n}" / "metrics.json"
        try:
            history[n] = {k: float(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            continue  # that iteration reused or never reached this phase
    history[int(ctx.iteration)] = current
    return history


def _samples(records: list[dict[str, Any]], seed: int) -> dict[str, list[dict[str, Any]]]:
    """Up to five accepted and five rejected records, drawn reproducibly from the run seed."""
    rng = random.Random(seed)
    out: dict[str, list[dict[str, Any]]] = {}
    for verdict in ("accept", "reject"):
        pool = [r for r in records if r.get("verdict") == verdict]
        out[verdict] = rng.sample(pool, min(_SAMPLES, len(pool)))
    return out
