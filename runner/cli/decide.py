"""`runner decide`: check a gate decision against the run and record it, or refuse it.

A decision comes from options or from a YAML file (keys `gate`, `decision`, `reviewer`,
`reason`, `set`, `packet_sha256`, `override_checks`, `sign_with`), checked with the same located,
did-you-mean errors as a spec. Every refusal is decided before anything is written, and the
record itself is one exclusively created file, so a refused decision changes nothing on disk
and two reviewers racing on one gate cannot both win. The lock holder (a `resume`, or a
`run --wait` waiting at the gate) turns the file into a journal event.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.console.logs import attach_run_log, get_logger
from runner.engine.runview import open_view
from runner.errors import EXIT_OK, Refused, SpecError, UsageError
from runner.machine import param_paths
from runner.review.decisions import DecisionRequest, refusals, to_record
from runner.review.signing import load_signing_key, sign, signed_by
from runner.spec import parse_set_args, problems_from_validation, set_path, with_problems_under
from runner.spec.reviewers import ReviewerSpec, key_fingerprint, public_key_line
from runner.spec.yaml_marks import load_with_marks
from runner.store.journal import utc_now

__all__ = ["DecisionFile", "load_decision_file", "record_decision"]


class DecisionFile(BaseModel):
    """The keys of a decision file; unknown keys are refused with did-you-mean."""

    model_config = ConfigDict(extra="forbid")

    gate: str
    decision: Literal["proceed", "iterate", "abort"]
    reviewer: str | None = None  # may be left out when signing: the key's name in `reviewers`
    reason: str
    set: dict[str, Any] = Field(default_factory=dict)
    packet_sha256: str | None = None
    override_checks: bool = False
    sign_with: str | None = None  # a key file, relative to the decision file's folder


def load_decision_file(path: str) -> tuple[DecisionRequest, str | None]:
    """Read and check a decision file; `SpecError` locates every problem in it. Returns the
    request (reviewer '' when left out) and the signing key file, if any."""
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
    key_file = None
    if parsed.sign_with is not None:
        key_file = str(Path(path).parent / Path(parsed.sign_with).expanduser())
    elif parsed.reviewer is None:
        raise UsageError(f"{path}: give 'reviewer' (or 'sign_with', a key the spec's reviewers list)")
    request = DecisionRequest(
        gate=parsed.gate, decision=parsed.decision, reviewer=parsed.reviewer or "", reason=parsed.reason,
        set=dict(parsed.set), packet_sha256=parsed.packet_sha256, override_checks=parsed.override_checks,
    )
    return request, key_file


def _request_from_options(args: argparse.Namespace) -> DecisionRequest:
    needed = ("gate", "decision", "reason") if args.sign_with else ("gate", "decision", "reviewer", "reason")
    missing = [f"--{n}" for n in needed if not getattr(args, n)]
    if missing:
        raise UsageError(f"runner decide: missing {', '.join(missing)} (or give --file DECISION.yaml)")
    return DecisionRequest(
        gate=args.gate, decision=args.decision, reviewer=args.reviewer or "", reason=args.reason,
        set=parse_set_args(args.sets), packet_sha256=args.packet, override_checks=args.override_checks,
    )


def _signer(request: DecisionRequest, key: Ed25519PrivateKey | None,
            reviewers: list[ReviewerSpec]) -> tuple[DecisionRequest, list[str]]:
    """The request with the reviewer's name taken from the key's `reviewers` entry, and why the
    signing is refused (a spec with reviewers takes only decisions signed by one of them)."""
    if key is None:
        if reviewers:
            names = ", ".join(r.name for r in reviewers)
            return request, [f"this run's spec lists reviewers ({names}): sign the decision with "
                             "--sign-with KEYFILE (in a decision file: sign_with), a key whose .pub is listed"]
        return request, []
    line = public_key_line(key.public_key())
    listed = {r.key: r.name for r in reviewers}
    if not reviewers:
        if not request.reviewer:
            raise UsageError("runner decide: give --reviewer: the spec lists no reviewers to take the key's name from")
        return request, []
    if line not in listed:
        names = ", ".join(f"{r.name} ({r.fingerprint})" for r in reviewers)
        # Named by its fingerprint, so that this is the one reason given about who decides.
        request = replace(request, reviewer=request.reviewer or key_fingerprint(line))
        return request, [f"the signing key {key_fingerprint(line)} is not one of the spec's reviewers "
                         f"({names}); sign with your listed key, or have the spec list it"]
    if request.reviewer and request.reviewer != listed[line]:
        return request, [f"--reviewer '{request.reviewer}' is not the signing key's name: the spec lists "
                         f"that key as '{listed[line]}'; leave --reviewer out or give that name"]
    return replace(request, reviewer=listed[line]), []


def record_decision(args: argparse.Namespace, state_dir: Path) -> int:
    """Refuse the decision with every reason that applies, or record it exclusively."""
    if args.file:
        flags = [n for n in ("gate", "decision", "reviewer", "reason", "packet", "sign_with") if getattr(args, n)]
        if flags or args.sets or args.override_checks:
            raise UsageError("runner decide: give either --file or the decision options, not both")
        request, key_file = load_decision_file(args.file)
    else:
        request, key_file = _request_from_options(args), args.sign_with
    view = open_view(state_dir, args.run_id)
    state = view.state
    key = load_signing_key(key_file) if key_file else None
    request, signer_refusals = _signer(request, key, view.spec.spec.reviewers)
    reasons = signer_refusals + refusals(state, view.plan, request, param_paths(state.params),
                                         spec=view.spec)
    if not reasons and request.set:  # what the phases' `with:` models would refuse at run time
        params = state.params
        for path, value in request.set.items():
            params = set_path(params, path, value)
        reasons = [str(p) for p in with_problems_under(view.spec, params, request.set)]
    log = get_logger(run_id=args.run_id)
    if reasons:
        # Logged to the console only: a refused decision changes nothing on disk.
        log.debug("decision_refused", gate=request.gate, decision=request.decision, reasons=reasons)
        raise Refused("decision refused: " + "; ".join(reasons))
    record = to_record(request, state.iteration, utc_now())
    if key is not None:
        visit = state.current_visit()
        if record.packet_sha256 is None and visit is not None:
            # A signature binds the decision to the packet that was there to review.
            record = record.model_copy(update={"packet_sha256": visit.packet_sha256})
        record = sign(record, args.run_id, key)
    if not view.folder.record_decision(request.gate, state.iteration, record.model_dump(mode="json")):
        log.debug("decision_refused", gate=request.gate, reasons=["already decided"])
        raise Refused(f"gate '{request.gate}' of iteration {state.iteration} was decided meanwhile by another reviewer")
    attach_run_log(view.folder.log)
    log.info("decision_recorded", gate=request.gate, iteration=state.iteration, decision=request.decision,
             reviewer=request.reviewer, reason=request.reason, set=request.set,
             override_checks=request.override_checks, signed_by=signed_by(record))
    print(f"recorded {request.decision} on gate '{request.gate}' (iteration {state.iteration}); "
          f"`runner resume {args.run_id}` acts on it")
    return EXIT_OK
