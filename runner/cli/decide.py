"""`runner decide`: check a gate decision against the run and record it, or refuse it.

A decision comes from options or from a YAML file (keys `gate`, `decision`, `reviewer`,
`reason`, `set`, `packet_sha256`, `override_checks`), checked with the same located,
did-you-mean errors as a spec. Every refusal is decided before anything is written, and the
record itself is one exclusively created file, so a refused decision changes nothing on disk
and two reviewers racing on one gate cannot both win. The lock holder (a `resume`, or a
`run --wait` waiting at the gate) turns the file into a journal event.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.console.logs import attach_run_log, get_logger
from runner.engine.runview import open_view
from runner.errors import EXIT_OK, Refused, SpecError, UsageError
from runner.machine import param_paths
from runner.review.decisions import DecisionRequest, refusals, to_record
from runner.spec import parse_set_args, problems_from_validation, set_path, with_problems_under
from runner.spec.yaml_marks import load_with_marks
from runner.store.journal import utc_now

__all__ = ["DecisionFile", "load_decision_file", "record_decision"]


class DecisionFile(BaseModel):
    """The keys of a decision file; unknown keys are refused with did-you-mean."""

    model_config = ConfigDict(extra="forbid")

    gate: str
    decision: Literal["proceed", "iterate", "abort"]
    reviewer: str
    reason: str
    set: dict[str, Any] = Field(default_factory=dict)
    packet_sha256: str | None = None
    override_checks: bool = False


def load_decision_file(path: str) -> DecisionRequest:
    """Read and check a decision file; `SpecError` locates every problem in it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the decision file ({exc.strerror or exc})") from None
    data, marks = load_with_marks(text, path)
    if not isinstance(data, dict):
        raise UsageError(f"{path}:1:1: a decision file must be a YAML mapping with keys gate, decision, reviewer, reason")
    try:
        parsed = DecisionFile.model_validate(data)
    except ValidationError as exc:
        raise SpecError(problems_from_validation(exc, marks, path, DecisionFile)) from None
    return DecisionRequest(
        gate=parsed.gate, decision=parsed.decision, reviewer=parsed.reviewer, reason=parsed.reason,
        set=dict(parsed.set), packet_sha256=parsed.packet_sha256, override_checks=parsed.override_checks,
    )


def _request_from_options(args: argparse.Namespace) -> DecisionRequest:
    missing = [f"--{n}" for n in ("gate", "decision", "reviewer", "reason") if not getattr(args, n)]
    if missing:
        raise UsageError(f"runner decide: missing {', '.join(missing)} (or give --file DECISION.yaml)")
    return DecisionRequest(
        gate=args.gate, decision=args.decision, reviewer=args.reviewer, reason=args.reason,
        set=parse_set_args(args.sets), packet_sha256=args.packet, override_checks=args.override_checks,
    )


def record_decision(args: argparse.Namespace, state_dir: Path) -> int:
    """Refuse the decision with every reason that applies, or record it exclusively."""
    if args.file:
        flags = [n for n in ("gate", "decision", "reviewer", "reason", "packet") if getattr(args, n)]
        if flags or args.sets or args.override_checks:
            raise UsageError("runner decide: give either --file or the decision options, not both")
        request = load_decision_file(args.file)
    else:
        request = _request_from_options(args)
    view = open_view(state_dir, args.run_id)
    state = view.state
    reasons = refusals(state, view.plan, request, param_paths(state.params), spec=view.spec)
    if not reasons and request.set:  # what the phases' `with:` models would refuse at run time
        params = state.params
        for key, value in request.set.items():
            params = set_path(params, key, value)
        reasons = [str(p) for p in with_problems_under(view.spec, params, request.set)]
    log = get_logger(run_id=args.run_id)
    if reasons:
        # Logged to the console only: a refused decision changes nothing on disk.
        log.debug("decision_refused", gate=request.gate, decision=request.decision, reasons=reasons)
        raise Refused("decision refused: " + "; ".join(reasons))
    record = to_record(request, state.iteration, utc_now())
    if not view.folder.record_decision(request.gate, state.iteration, record.model_dump(mode="json")):
        log.debug("decision_refused", gate=request.gate, reasons=["already decided"])
        raise Refused(f"gate '{request.gate}' of iteration {state.iteration} was decided meanwhile by another reviewer")
    attach_run_log(view.folder.log)
    log.info("decision_recorded", gate=request.gate, iteration=state.iteration, decision=request.decision,
             reviewer=request.reviewer, reason=request.reason, set=request.set,
             override_checks=request.override_checks)
    print(f"recorded {request.decision} on gate '{request.gate}' (iteration {state.iteration}); "
          f"`runner resume {args.run_id}` acts on it")
    return EXIT_OK
