"""The transition tables, `apply` and `next_step` (see the package docstring)."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from runner.errors import IllegalTransition
from runner.machine.amend import on_amended
from runner.machine.events import (
    BudgetExhausted,
    DecisionRecorded,
    Event,
    GateReached,
    PhaseReused,
    PhaseStarted,
    PhaseSucceeded,
    Resumed,
    RunCompleted,
    RunStarted,
)
from runner.machine.plan import GateStep, PhaseStep, Plan
from runner.machine.state import (
    GateVisit,
    PhaseInstance,
    PhaseStatus,
    RunState,
    RunStatus,
)

_R = RunStatus
_P = PhaseStatus

RUN_TRANSITIONS: dict[tuple[RunStatus | None, str], RunStatus] = {
    (None, "run_started"): _R.RUNNING,
    (_R.RUNNING, "phase_started"): _R.RUNNING,
    (_R.RUNNING, "phase_succeeded"): _R.RUNNING,
    (_R.RUNNING, "phase_reused"): _R.RUNNING,
    (_R.RUNNING, "phase_failed"): _R.FAILED,
    (_R.RUNNING, "gate_reached"): _R.AWAITING_DECISION,
    (_R.AWAITING_DECISION, "decision_recorded:proceed"): _R.READY,
    (_R.AWAITING_DECISION, "decision_recorded:iterate"): _R.READY,
    (_R.AWAITING_DECISION, "decision_recorded:abort"): _R.ABORTED,
    (_R.READY, "resumed"): _R.RUNNING,      # applies the pending decision
    (_R.FAILED, "resumed"): _R.RUNNING,     # retry: the failed instance starts again
    (_R.RUNNING, "resumed"): _R.RUNNING,    # crash recovery: running instances -> pending
    (_R.RUNNING, "run_completed"): _R.COMPLETED,
    (_R.RUNNING, "budget_exhausted"): _R.FAILED,
    # `resume --spec`: a new frozen spec; the engine drives on at once (see amend.py).
    (_R.FAILED, "spec_amended"): _R.RUNNING,
    (_R.RUNNING, "spec_amended"): _R.RUNNING,
    (_R.AWAITING_DECISION, "spec_amended"): _R.RUNNING,
}
"""(run status, transition key) -> next run status; see `transition_key`."""

PHASE_TRANSITIONS: dict[tuple[PhaseStatus | None, str], PhaseStatus] = {
    (None, "run_started"): _P.PENDING,      # every phase of the plan, iteration 1
    (None, "resumed"): _P.PENDING,          # an applied ITERATE: iterate_from .. end of plan
    (_P.PENDING, "phase_started"): _P.RUNNING,
    (_P.FAILED, "phase_started"): _P.RUNNING,
    (_P.RUNNING, "phase_succeeded"): _P.SUCCEEDED,
    (_P.RUNNING, "phase_failed"): _P.FAILED,
    (_P.PENDING, "phase_reused"): _P.REUSED,
    (_P.RUNNING, "resumed"): _P.PENDING,    # crash recovery discards the uncommitted attempt
    # An amend re-runs the changed phase and every step after it (the only way out of done).
    (None, "spec_amended"): _P.PENDING,     # a phase the new spec adds
    **{(s, "spec_amended"): _P.PENDING for s in _P},
}
"""(phase instance status, event kind) -> next status; None = no instance yet."""


def transition_key(event: Event) -> str:
    """The event's key in `RUN_TRANSITIONS`: its kind, plus `:<decision>` for a decision."""
    if isinstance(event, DecisionRecorded):
        return f"{event.kind}:{event.decision.decision}"
    return event.kind


def _name(status: StrEnum | None) -> str:
    return "none" if status is None else str(status.value)


def _phase(status: PhaseStatus | None, kind: str, name: str, iteration: int) -> PhaseStatus:
    nxt = PHASE_TRANSITIONS.get((status, kind))
    if nxt is None:
        what = "has no instance" if status is None else f"is {_name(status)}"
        raise IllegalTransition(_name(status), kind,
                                f"phase '{name}' {what} in iteration {iteration}")
    return nxt




def param_paths(params: dict[str, Any]) -> set[str]:
    """Every dotted path of `params`, parents and leaves (`{'a': {'b': 1}}` -> a, a.b)."""
    out: set[str] = set()
    for key, value in params.items():
        out.add(key)
        if isinstance(value, dict):
            out.update(f"{key}.{sub}" for sub in param_paths(value))
    return out


def set_dotted(params: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `params` with the existing dotted `path` replaced by `value` (KeyError if the
    path does not exist); `params` itself is left as it was."""
    head, _, rest = path.partition(".")
    if head not in params or (rest and not isinstance(params[head], dict)):
        raise KeyError(f"no parameter '{path}'")
    new = dict(params)
    new[head] = set_dotted(params[head], rest, value) if rest else copy.deepcopy(value)
    return new




def _illegal(state: RunState, event: Event, detail: str) -> IllegalTransition:
    return IllegalTransition(_name(state.status), event.kind, detail)


def _replace(phases: list[PhaseInstance], old: PhaseInstance, new: PhaseInstance) -> list[
        PhaseInstance]:
    return [new if p is old else p for p in phases]


def _cursor_phase(state: RunState, event: Event, name: str, plan: Plan) -> PhaseInstance | None:
    step = plan.steps[state.cursor] if state.cursor < len(plan.steps) else None
    if not isinstance(step, PhaseStep) or step.name != name:
        at = f"'{step.name}'" if step else "the end of the plan"
        raise _illegal(state, event, f"phase '{name}' is not the step at the cursor ({at})")
    return state.instance(name, state.iteration)


def _on_phase(state: RunState, event: Any, plan: Plan) -> dict[str, Any]:
    inst = _cursor_phase(state, event, event.name, plan)
    status = _phase(inst.status if inst else None, event.kind, event.name, state.iteration)
    assert inst is not None  # the phase table has no (None, phase_*) entry
    upd: dict[str, Any] = {"status": status}
    out: dict[str, Any] = {}
    if isinstance(event, PhaseStarted):
        upd |= {"attempts": inst.attempts + 1, "fingerprint": event.fingerprint,
                "started_at": event.at, "ended_at": None, "error": None}
    elif isinstance(event, PhaseReused):
        src = state.instance(event.name, event.source_iteration)
        if (event.source_iteration >= state.iteration or src is None
                or src.status not in (_P.SUCCEEDED, _P.REUSED)):
            raise _illegal(state, event, f"phase '{event.name}' has no succeeded or reused "
                           f"instance in earlier iteration {event.source_iteration} to reuse")
        upd |= {"metrics": dict(event.metrics), "fingerprint": event.fingerprint,
                "reused_from": event.source_iteration, "started_at": event.at,
                "ended_at": event.at}
        out["cursor"] = state.cursor + 1
    else:  # PhaseSucceeded | PhaseFailed
        upd |= {"wall_s": inst.wall_s + event.wall_s, "used_cuda": inst.used_cuda
                or event.used_cuda, "ended_at": event.at}
        if isinstance(event, PhaseSucceeded):
            upd["metrics"] = dict(event.metrics)
            out["cursor"] = state.cursor + 1
        else:
            upd["error"] = event.error
            out["failure"] = event.error
    out["phases"] = _replace(state.phases, inst, inst.model_copy(update=upd))
    return out


def _on_gate(state: RunState, event: GateReached, plan: Plan) -> dict[str, Any]:
    step = plan.steps[state.cursor] if state.cursor < len(plan.steps) else None
    if not isinstance(step, GateStep) or step.name != event.gate:
        at = f"'{step.name}'" if step else "the end of the plan"
        raise _illegal(state, event, f"gate '{event.gate}' is not the step at the cursor ({at})")
    visit = GateVisit(gate=event.gate, iteration=state.iteration, checks=list(event.checks),
                      packet_sha256=event.packet_sha256, at=event.at)
    return {"pending_gate": event.gate, "gate_visits": [*state.gate_visits, visit]}


def _on_decision(state: RunState, event: DecisionRecorded, plan: Plan) -> dict[str, Any]:
    d = event.decision
    if d.gate != state.pending_gate:
        raise _illegal(state, event, f"gate '{d.gate}' is not pending (the pending gate is "
                       f"'{state.pending_gate}')")
    if d.iteration != state.iteration:
        raise _illegal(state, event, f"the decision is for iteration {d.iteration}, but gate "
                       f"'{d.gate}' is pending in iteration {state.iteration}")
    if state.decision_on(d.gate, d.iteration) is not None:
        raise _illegal(state, event, f"gate '{d.gate}' already has a decision in iteration "
                       f"{d.iteration}")
    if d.set and d.decision != "iterate":
        raise _illegal(state, event, f"'set' goes with iterate only, not {d.decision}")
    unknown = sorted(set(d.set) - param_paths(state.params))
    if unknown:
        raise _illegal(state, event, f"'set' names unknown parameters: {', '.join(unknown)}")
    return {"decisions": [*state.decisions, d]}


def _on_resumed(state: RunState, event: Resumed, plan: Plan) -> dict[str, Any]:
    if state.status == _R.FAILED:
        return {"failure": None}
    if state.status == _R.RUNNING:
        phases = [p.model_copy(update={"status": _phase(p.status, event.kind, p.name,
                                                        p.iteration)})
                  if p.status == _P.RUNNING else p for p in state.phases]
        return {"phases": phases}
    d = state.pending_decision()  # READY
    assert d is not None and state.pending_gate is not None
    if d.decision == "proceed":
        return {"cursor": state.cursor + 1, "pending_gate": None}
    gate = plan.gate(state.pending_gate)
    assert gate is not None
    params = state.params
    for path, value in d.set.items():
        params = set_dotted(params, path, value)
    start = plan.index_of(gate.iterate_from)
    iteration = state.iteration + 1
    fresh = [PhaseInstance(name=s.name, iteration=iteration,
                           status=_phase(None, event.kind, s.name, iteration))
             for s in plan.steps[start:] if isinstance(s, PhaseStep)]
    kept = [p for p in state.phases if p.status != _P.PENDING]
    return {"iteration": iteration, "params": params, "phases": kept + fresh, "cursor": start,
            "pending_gate": None}


def _on_completed(state: RunState, event: RunCompleted, plan: Plan) -> dict[str, Any]:
    if state.cursor != len(plan.steps):
        raise _illegal(state, event, f"step {state.cursor} ('{plan.steps[state.cursor].name}') "
                       "is not done yet")
    return {}


def _on_budget(state: RunState, event: BudgetExhausted, plan: Plan) -> dict[str, Any]:
    running = state.running_instance()
    if running is not None:
        raise _illegal(state, event, f"phase '{running.name}' is running; record its outcome "
                       "first")
    return {"failure": event.reason}


_HANDLERS: dict[str, Any] = {
    "phase_started": _on_phase, "phase_succeeded": _on_phase, "phase_reused": _on_phase,
    "phase_failed": _on_phase, "gate_reached": _on_gate, "decision_recorded": _on_decision,
    "resumed": _on_resumed, "run_completed": _on_completed, "budget_exhausted": _on_budget,
    "spec_amended": on_amended,
}


def apply(state: RunState | None, event: Event, plan: Plan) -> RunState:
    """The state after `event` (a new object; `state` is not changed; seq + 1). Raises
    `IllegalTransition` for a transition the tables do not list or a failed guard."""
    status = state.status if state is not None else None
    target = RUN_TRANSITIONS.get((status, transition_key(event)))
    if target is None:
        accepted = sorted({_name(s) for (s, k) in RUN_TRANSITIONS
                           if k.partition(":")[0] == event.kind})
        raise IllegalTransition(_name(status), event.kind,
                                f"'{event.kind}' is accepted only in: {', '.join(accepted)}")
    if isinstance(event, RunStarted):
        phases = [PhaseInstance(name=n, iteration=1,
                                status=_phase(None, event.kind, n, 1)) for n in plan.phase_names]
        return RunState(run_id=event.run_id, name=event.name, status=target,
                        params=copy.deepcopy(event.params), phases=phases, seq=1)
    assert state is not None
    update = _HANDLERS[event.kind](state, event, plan)
    return state.model_copy(update={**update, "status": target, "seq": state.seq + 1})


def replay(events: Iterable[Event], plan: Plan) -> RunState | None:
    """The state after applying `events` in order from no run (None for no events)."""
    state: RunState | None = None
    for event in events:
        state = apply(state, event, plan)
    return state




@dataclass(frozen=True)
class RunPhase:
    """Run (or reuse) the phase at the cursor."""

    name: str


@dataclass(frozen=True)
class ReachGate:
    """Evaluate the gate at the cursor and emit `GateReached`."""

    gate: str


@dataclass(frozen=True)
class Finish:
    """Every step is done: emit `RunCompleted`."""


@dataclass(frozen=True)
class Stop:
    """The run is not `running`; the engine stops (or resumes it with `Resumed`)."""

    status: RunStatus


NextStep = RunPhase | ReachGate | Finish | Stop


def next_step(state: RunState, plan: Plan) -> NextStep:
    """What the engine does next for a run in `state`."""
    if state.status != _R.RUNNING:
        return Stop(state.status)
    if state.cursor >= len(plan.steps):
        return Finish()
    step = plan.steps[state.cursor]
    return ReachGate(step.name) if isinstance(step, GateStep) else RunPhase(step.name)
