"""The pure part of amending a run (`resume --spec`): where the run goes on under a new plan.

An amend keeps, in the current iteration, every step that is done and unchanged from the
iteration's first step on, and stops at the first one that is not: a phase whose fingerprint
differs under the new spec (named in the event's `changed`), a phase not done yet or new, or a
gate without a decision (its packet is rebuilt, since its checks may have changed). From that
step on, every phase instance of the iteration is pending again. A gate at or after that step
that already has a decision in the iteration would be passed again with results no reviewer
saw, so such an amend is illegal (the engine refuses it before writing anything).

`apply` (transitions.py) calls `on_amended` with the NEW spec's plan; `restart_index` is what
the engine and `plan --run --spec` use to say the same thing before the event exists.
"""

from __future__ import annotations

from typing import Any

from runner.errors import IllegalTransition
from runner.machine.events import SpecAmended
from runner.machine.plan import GateStep, PhaseStep, Plan
from runner.machine.state import Amendment, PhaseInstance, PhaseStatus, RunState

__all__ = ["decided_gates_after", "iteration_begin", "on_amended", "restart_index"]

_DONE = (PhaseStatus.SUCCEEDED, PhaseStatus.REUSED)


def iteration_begin(state: RunState, plan: Plan) -> int | None:
    """The index in `plan` of the current iteration's first phase (the first step of `plan`
    that has an instance in the iteration), or None when no phase of `plan` has one."""
    for i, step in enumerate(plan.steps):
        if isinstance(step, PhaseStep) and state.instance(step.name, state.iteration) is not None:
            return i
    return None


def restart_index(state: RunState, plan: Plan, changed: list[str] | set[str]) -> int:
    """The index in `plan` where the amended run goes on (see the module docstring)."""
    begin = iteration_begin(state, plan)
    i = 0 if begin is None else begin
    while i < len(plan.steps):
        step = plan.steps[i]
        if isinstance(step, PhaseStep):
            inst = state.instance(step.name, state.iteration)
            if inst is None or inst.status not in _DONE or step.name in changed:
                break
        elif state.decision_on(step.name, state.iteration) is None:
            break
        i += 1
    return i


def decided_gates_after(state: RunState, plan: Plan, index: int) -> list[str]:
    """Gates at or after `index` that have a decision in the current iteration."""
    return [s.name for s in plan.steps[index:]
            if isinstance(s, GateStep) and state.decision_on(s.name, state.iteration) is not None]


def _pending(inst: PhaseInstance) -> PhaseInstance:
    # attempts and wall_s stay: they are spent work (the budget counts GPU seconds spent).
    return inst.model_copy(update={"status": PhaseStatus.PENDING, "metrics": {}, "fingerprint": None,
                                   "reused_from": None, "error": None, "started_at": None,
                                   "ended_at": None})


def on_amended(state: RunState, event: SpecAmended, plan: Plan) -> dict[str, Any]:
    """The state update of `SpecAmended` under the new `plan` (IllegalTransition if it would
    pass a decided gate again or no phase of the iteration is left in the new plan)."""
    iteration = state.iteration
    if iteration_begin(state, plan) is None:
        raise IllegalTransition(state.status.value, event.kind,
                                f"the new plan has none of the phases of iteration {iteration}")
    start = restart_index(state, plan, set(event.changed))
    decided = decided_gates_after(state, plan, start)
    if decided:
        at = plan.steps[start].name if start < len(plan.steps) else "the end"
        raise IllegalTransition(state.status.value, event.kind,
                                f"gate '{decided[0]}' has a decision in iteration {iteration}, but "
                                f"the amended run would go on from '{at}' before it")
    again = {s.name for s in plan.steps[start:] if isinstance(s, PhaseStep)}
    in_plan = set(plan.phase_names)
    phases: list[PhaseInstance] = []
    for p in state.phases:
        if p.iteration != iteration:
            phases.append(p)
        elif p.name in again:
            phases.append(_pending(p))
        elif p.name in in_plan or p.status != PhaseStatus.PENDING:
            phases.append(p)  # done before the restart, or history of a removed phase
    have = {p.name for p in phases if p.iteration == iteration}
    phases += [PhaseInstance(name=n, iteration=iteration) for n in plan.phase_names
               if n in again and n not in have]
    undecided_here = {s.name for s in plan.steps[start:] if isinstance(s, GateStep)}
    visits = [v for v in state.gate_visits
              if not (v.iteration == iteration and v.gate in undecided_here)]
    amendment = Amendment(at=event.at, old_sha256=event.old_sha256, new_sha256=event.new_sha256,
                          frozen=event.frozen)
    return {"cursor": start, "phases": phases, "gate_visits": visits, "pending_gate": None,
            "failure": None, "params": dict(event.params), "frozen_spec": event.frozen,
            "amendments": [*state.amendments, amendment]}
