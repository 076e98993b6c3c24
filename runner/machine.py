"""The run's pure state machine: plan, state, events, transition tables, `apply`, `next_step`.

No I/O, no clock, no randomness: every timestamp and duration arrives inside an event, so
replaying the journal through `apply` rebuilds exactly the state the run had. Two tables list
every legal transition: `RUN_TRANSITIONS` for the run and `PHASE_TRANSITIONS` for a phase
instance; anything else, and any failed guard, raises `IllegalTransition` and changes nothing.

`IllegalTransition.state` is the run status (``"none"`` before `RunStarted`) when the run table or
a run-level guard refuses, and the phase instance's status (``"none"`` when it has no instance in
the current iteration) when the phase table refuses; `.detail` names the phase, gate or step.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from runner.errors import IllegalTransition

__all__ = [
    "PHASE_TRANSITIONS", "RUN_TRANSITIONS", "BudgetExhausted", "CheckOutcome", "DecisionKind",
    "DecisionRecord", "DecisionRecorded", "Event", "Finish", "GateReached", "GateStep",
    "GateVisit", "NextStep", "PhaseFailed", "PhaseInstance", "PhaseReused", "PhaseStarted",
    "PhaseStatus", "PhaseStep", "PhaseSucceeded", "Plan", "PlanError", "ReachGate", "Resumed",
    "RunCompleted", "RunPhase", "RunStarted", "RunState", "RunStatus", "Step", "Stop", "apply",
    "next_step", "param_paths", "parse_event", "replay", "set_dotted", "transition_key",
]


# ----------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PhaseStep:
    """A phase of the plan."""

    name: str


@dataclass(frozen=True)
class GateStep:
    """A gate of the plan; `iterate_from` is already defaulted to the first phase."""

    name: str
    iterate_from: str
    may_set: tuple[str, ...] | None = None
    max_iterations: int | None = None
    checks: tuple[str, ...] = ()


Step = PhaseStep | GateStep


class PlanError(ValueError):
    """A plan definition with problems; `.problems` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid plan: " + "; ".join(problems))


@dataclass(frozen=True)
class Plan:
    """The ordered steps of a run; checked on construction (raises `PlanError`)."""

    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        problems: list[str] = []
        seen: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            if step.name in seen:
                problems.append(f"step {i}: name '{step.name}' is already used by step "
                                f"{seen[step.name]}; give every phase and gate its own name")
            seen.setdefault(step.name, i)
            if isinstance(step, GateStep):
                before = [s.name for s in self.steps[:i] if isinstance(s, PhaseStep)]
                if step.iterate_from not in before:
                    problems.append(f"gate '{step.name}': iterate_from '{step.iterate_from}' is "
                                    f"not a phase before the gate (phases before it: "
                                    f"{', '.join(before) or 'none'})")
                if step.max_iterations is not None and step.max_iterations < 1:
                    problems.append(f"gate '{step.name}': max_iterations must be at least 1")
            elif not isinstance(step, PhaseStep):
                problems.append(f"step {i}: {step!r} is neither a PhaseStep nor a GateStep")
        if not any(isinstance(s, PhaseStep) for s in self.steps):
            problems.append("the plan has no phase; add at least one")
        if problems:
            raise PlanError(problems)

    def index_of(self, name: str) -> int:
        """The index of the step called `name` (KeyError if none)."""
        for i, step in enumerate(self.steps):
            if step.name == name:
                return i
        raise KeyError(name)

    def gate(self, name: str) -> GateStep | None:
        """The gate called `name`, or None."""
        return next((s for s in self.steps if isinstance(s, GateStep) and s.name == name), None)

    @property
    def phase_names(self) -> tuple[str, ...]:
        """The phases' names, in order."""
        return tuple(s.name for s in self.steps if isinstance(s, PhaseStep))

    @property
    def gate_names(self) -> tuple[str, ...]:
        """The gates' names, in order."""
        return tuple(s.name for s in self.steps if isinstance(s, GateStep))


# ---------------------------------------------------------------------------------- state


class RunStatus(StrEnum):
    """The run's machine status (`interrupted` is computed by `status`, not stored)."""

    RUNNING = "running"
    AWAITING_DECISION = "awaiting_decision"
    READY = "ready"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"


class PhaseStatus(StrEnum):
    """A phase instance's status."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REUSED = "reused"


DecisionKind = Literal["proceed", "iterate", "abort"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class PhaseInstance(_Model):
    """One phase in one iteration."""

    name: str
    iteration: int
    status: PhaseStatus = PhaseStatus.PENDING
    metrics: dict[str, float] = Field(default_factory=dict)
    fingerprint: str | None = None
    reused_from: int | None = None
    attempts: int = 0
    wall_s: float = 0.0
    used_cuda: bool = False
    error: str | None = None
    started_at: str | None = None
    ended_at: str | None = None


class DecisionRecord(_Model):
    """A recorded gate decision; `set` maps dotted parameter paths to values."""

    gate: str
    iteration: int
    decision: DecisionKind
    reviewer: str
    reason: str
    set: dict[str, Any] = Field(default_factory=dict)
    override_checks: bool = False
    at: str
    packet_sha256: str | None = None


class CheckOutcome(_Model):
    """One evaluated gate check; `value` is None when the metric is missing."""

    expr: str
    value: float | None = None
    passed: bool


class GateVisit(_Model):
    """One arrival at a gate."""

    gate: str
    iteration: int
    checks: list[CheckOutcome] = Field(default_factory=list)
    packet_sha256: str | None = None
    at: str


class RunState(_Model):
    """Everything the machine knows about a run; immutable, JSON round-trips exactly."""

    run_id: str
    name: str
    status: RunStatus
    iteration: int = 1
    cursor: int = 0
    params: dict[str, Any] = Field(default_factory=dict)
    phases: list[PhaseInstance] = Field(default_factory=list)
    decisions: list[DecisionRecord] = Field(default_factory=list)
    gate_visits: list[GateVisit] = Field(default_factory=list)
    pending_gate: str | None = None
    failure: str | None = None
    seq: int = 0

    def instance(self, name: str, iteration: int) -> PhaseInstance | None:
        """The instance of phase `name` in `iteration`, or None."""
        return next((p for p in self.phases if p.name == name and p.iteration == iteration), None)

    def latest_instance(self, name: str) -> PhaseInstance | None:
        """The latest succeeded-or-reused instance of phase `name` (gate checks, inputs)."""
        done = (PhaseStatus.SUCCEEDED, PhaseStatus.REUSED)
        found = [p for p in self.phases if p.name == name and p.status in done]
        return max(found, key=lambda p: p.iteration, default=None)

    def running_instance(self) -> PhaseInstance | None:
        """The instance now `running`, or None."""
        return next((p for p in self.phases if p.status == PhaseStatus.RUNNING), None)

    def visits(self, gate: str) -> list[GateVisit]:
        """Every visit of `gate`, oldest first."""
        return [v for v in self.gate_visits if v.gate == gate]

    def current_visit(self) -> GateVisit | None:
        """The visit of the pending gate in the current iteration, or None."""
        if self.pending_gate is None:
            return None
        return next((v for v in reversed(self.gate_visits)
                     if v.gate == self.pending_gate and v.iteration == self.iteration), None)

    def decision_on(self, gate: str, iteration: int) -> DecisionRecord | None:
        """The decision recorded on `gate`'s visit in `iteration`, or None."""
        return next((d for d in self.decisions if d.gate == gate and d.iteration == iteration),
                    None)

    def pending_decision(self) -> DecisionRecord | None:
        """The decision on the pending gate's visit: waiting for `Resumed` when `ready` (the
        final one when `aborted`); None while no decision is recorded or no gate is pending."""
        if self.pending_gate is None:
            return None
        return self.decision_on(self.pending_gate, self.iteration)


# --------------------------------------------------------------------------------- events


class RunStarted(_Model):
    kind: Literal["run_started"] = "run_started"
    run_id: str
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class PhaseStarted(_Model):
    kind: Literal["phase_started"] = "phase_started"
    name: str
    fingerprint: str | None = None
    at: str


class PhaseSucceeded(_Model):
    kind: Literal["phase_succeeded"] = "phase_succeeded"
    name: str
    metrics: dict[str, float] = Field(default_factory=dict)
    wall_s: float = 0.0
    used_cuda: bool = False
    at: str


class PhaseReused(_Model):
    kind: Literal["phase_reused"] = "phase_reused"
    name: str
    fingerprint: str | None = None
    source_iteration: int
    metrics: dict[str, float] = Field(default_factory=dict)
    at: str


class PhaseFailed(_Model):
    kind: Literal["phase_failed"] = "phase_failed"
    name: str
    error: str
    wall_s: float = 0.0
    used_cuda: bool = False
    at: str


class GateReached(_Model):
    kind: Literal["gate_reached"] = "gate_reached"
    gate: str
    checks: list[CheckOutcome] = Field(default_factory=list)
    packet_sha256: str | None = None
    at: str


class DecisionRecorded(_Model):
    kind: Literal["decision_recorded"] = "decision_recorded"
    decision: DecisionRecord


class Resumed(_Model):
    kind: Literal["resumed"] = "resumed"
    at: str


class RunCompleted(_Model):
    kind: Literal["run_completed"] = "run_completed"
    at: str


class BudgetExhausted(_Model):
    kind: Literal["budget_exhausted"] = "budget_exhausted"
    reason: str
    at: str


Event = Annotated[
    RunStarted | PhaseStarted | PhaseSucceeded | PhaseReused | PhaseFailed | GateReached
    | DecisionRecorded | Resumed | RunCompleted | BudgetExhausted,
    Field(discriminator="kind"),
]
_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


def parse_event(data: dict[str, Any]) -> Event:
    """The event a JSON object describes (pydantic ValidationError if it describes none)."""
    return _EVENT_ADAPTER.validate_python(data)


# ---------------------------------------------------------------------------- transitions

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


# --------------------------------------------------------------------------------- params


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


# ---------------------------------------------------------------------------------- apply


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


# ------------------------------------------------------------------------------ next step


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
