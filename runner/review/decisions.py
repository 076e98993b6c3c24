"""Pure checks of a gate decision against the run's state: every refusal of the contract.

`refusals` returns all reasons at once (an empty list accepts the request), each a sentence
that says what to do instead; `to_record` turns an accepted request into the `DecisionRecord`
that a `DecisionRecorded` event carries. No I/O: the caller passes the state, the plan, the
effective parameters' dotted paths (`runner.machine.param_paths(state.params)`) and the run's
frozen spec, whose `param_types` and `may_set` bounds limit what `set` may hold
(`set_refusals`): a value keeps its parameter's type and stays inside the gate's bounds.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.machine import DecisionKind, DecisionRecord, Plan, RunState, RunStatus
from runner.spec import ResolvedSpec, SetBounds, get_path
from runner.spec.params import declared_types, type_problems

__all__ = ["DECISIONS", "DecisionRequest", "bound_problem", "refusals", "set_refusals", "to_record"]

DECISIONS = ("proceed", "iterate", "abort")


@dataclass(frozen=True)
class DecisionRequest:
    """A decision as asked by `runner decide` (from options or a decision file)."""

    gate: str
    decision: DecisionKind
    reviewer: str
    reason: str
    set: dict[str, Any] = field(default_factory=dict)
    packet_sha256: str | None = None
    override_checks: bool = False


def _did_you_mean(word: str, choices: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _pending(state: RunState, request: DecisionRequest) -> str | None:
    """Why the request's gate is not pending, or None when it is."""
    gate = state.pending_gate
    if state.status == RunStatus.AWAITING_DECISION and gate == request.gate:
        return None
    if state.status == RunStatus.AWAITING_DECISION:
        return (f"no gate '{request.gate}' is pending; the pending gate is '{gate}': "
                f"decide with --gate {gate}")
    done = state.pending_decision() if gate is not None else None
    if done is not None:
        what = (f"gate '{gate}' already has a decision ({done.decision} by {done.reviewer}) "
                f"in iteration {done.iteration}; a second decision is refused")
        if state.status == RunStatus.READY:
            return what + f": run `runner resume {state.run_id}` to apply it"
        return what + f" and the run is {state.status.value}"
    return (f"no gate '{request.gate}' is pending (the run is {state.status.value}); "
            "decide only when `runner status` shows awaiting_decision")


def _allowed(key: str, may_set: tuple[str, ...] | None) -> bool:
    return may_set is None or any(key == p or key.startswith(p + ".") for p in may_set)


def _same(a: Any, b: Any) -> bool:
    # 1 == True and 1 == 1.0 in Python; a choice matches only a value of its kind.
    return isinstance(a, bool) == isinstance(b, bool) and isinstance(a, str) == isinstance(b, str) and a == b


def bound_problem(path: str, value: Any, bounds: SetBounds) -> str | None:
    """Why `value` lies outside `bounds` of `may_set` path `path`, or None when it is inside."""
    if bounds.choices is not None and not any(_same(value, c) for c in bounds.choices):
        return f"'{path}' = {value!r} is not one of the gate's choices {bounds.choices!r}"
    if bounds.min is None and bounds.max is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"'{path}' = {value!r} is not a number; the gate bounds it by min/max"
    if bounds.min is not None and value < bounds.min:
        return f"'{path}' = {value!r} is below the gate's min {bounds.min:g}"
    if bounds.max is not None and value > bounds.max:
        return f"'{path}' = {value!r} is above the gate's max {bounds.max:g}"
    return None


def set_refusals(params: Mapping[str, Any], values: Mapping[str, Any],
                 bounds: Mapping[str, SetBounds], param_types: Mapping[str, Any] | None) -> list[str]:
    """What is wrong with the values of an ITERATE's `set` (paths already known to exist).

    Each value keeps its parameter's type unless `param_types` says otherwise; a value on or
    above a bounded `may_set` path (a mapping set on a group reaches the paths below it) must
    lie inside that path's bounds.
    """
    out: list[str] = []
    declared = declared_types(param_types)
    for key, value in values.items():
        try:
            current = get_path(params, key)
        except KeyError:
            continue  # an unknown parameter: refused above, with a did-you-mean
        out += [f"--set {m}" for m in type_problems(key, current, value, declared)]
        for path, bound in bounds.items():
            if path != key and not path.startswith(key + "."):
                continue
            try:
                sub = value if path == key else get_path(value, path[len(key) + 1:])
            except KeyError:
                continue  # the mapping leaves that path as it is
            why = bound_problem(path, sub, bound)
            if why is not None:
                out.append(f"--set {key}: {why}")
    return out


def refusals(state: RunState, plan: Plan, request: DecisionRequest,
             param_paths: set[str], spec: ResolvedSpec | None = None) -> list[str]:
    """Every reason the contract refuses `request` in `state`; empty when it is accepted.

    With the run's frozen `spec`, the values of `set` are checked too (`set_refusals`).
    """
    out: list[str] = []
    if request.decision not in DECISIONS:
        out.append(f"unknown decision '{request.decision}'"
                   f"{_did_you_mean(request.decision, list(DECISIONS))}; "
                   "use proceed, iterate or abort")
    not_pending = _pending(state, request)
    if not_pending is not None:
        out.append(not_pending)
    if request.set and request.decision in ("proceed", "abort"):
        out.append(f"--set goes with iterate only, not {request.decision}: drop the --set "
                   "options or decide iterate")
    gate = plan.gate(request.gate)
    for key in request.set:
        if key not in param_paths:
            out.append(f"--set names unknown parameter '{key}'{_did_you_mean(key, param_paths)};"
                       " only existing parameters can be set (see `runner status --json`)")
        elif gate is not None and not _allowed(key, gate.may_set):
            allowed = ", ".join(gate.may_set or ())
            out.append(f"gate '{gate.name}' does not allow changing '{key}' (may_set: "
                       f"{allowed or 'nothing'}); set only those parameters or keys below them")
    if spec is not None and request.set:
        try:
            bounds = spec.gate(request.gate).bounds
        except KeyError:
            bounds = {}  # no such gate: refused above
        out += set_refusals(state.params, request.set, bounds, spec.spec.param_types)
    visit = state.current_visit() if not_pending is None else None
    if visit is not None and request.packet_sha256 is not None \
            and request.packet_sha256 != visit.packet_sha256:
        out.append(f"packet {request.packet_sha256} does not match the pending packet of gate "
                   f"'{visit.gate}' ({visit.packet_sha256}): review the current packet with "
                   f"`runner gate {state.run_id}` and decide again")
    if visit is not None and request.decision == "proceed" and not request.override_checks:
        failing = [c for c in visit.checks if not c.passed]
        if failing:
            names = ", ".join(f"{c.expr} (value {'missing' if c.value is None else c.value})"
                              for c in failing)
            out.append(f"checks of gate '{visit.gate}' fail: {names}; decide iterate or abort, "
                       "or proceed with --override-checks")
    if (not_pending is None and gate is not None and request.decision == "iterate"
            and gate.max_iterations is not None
            and len(state.visits(gate.name)) >= gate.max_iterations):
        out.append(f"gate '{gate.name}' has reached max_iterations ({gate.max_iterations}); "
                   "decide proceed or abort")
    if not request.reviewer.strip():
        out.append("the reviewer is empty: say who decides with --reviewer")
    if not request.reason.strip():
        out.append("the reason is empty: say why with --reason")
    return out


def to_record(request: DecisionRequest, iteration: int, at: str) -> DecisionRecord:
    """The record of an accepted `request` for the gate's visit in `iteration`."""
    return DecisionRecord(gate=request.gate, iteration=iteration, decision=request.decision,
                          reviewer=request.reviewer, reason=request.reason, set=dict(request.set),
                          override_checks=request.override_checks, at=at,
                          packet_sha256=request.packet_sha256)
