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

from runner.machine.amend import decided_gates_after, iteration_begin, restart_index
from runner.machine.events import (
    BudgetExhausted,
    DecisionRecorded,
    Event,
    GateReached,
    PhaseFailed,
    PhaseReused,
    PhaseStarted,
    PhaseSucceeded,
    Resumed,
    RunCompleted,
    RunStarted,
    SpecAmended,
    parse_event,
)
from runner.machine.plan import GateStep, PhaseStep, Plan, PlanError, Step
from runner.machine.state import (
    Amendment,
    CheckOutcome,
    DecisionKind,
    DecisionRecord,
    DecisionSignature,
    GateVisit,
    PhaseInstance,
    PhaseStatus,
    RunState,
    RunStatus,
)
from runner.machine.transitions import (
    PHASE_TRANSITIONS,
    RUN_TRANSITIONS,
    Finish,
    NextStep,
    ReachGate,
    RunPhase,
    Stop,
    apply,
    next_step,
    param_paths,
    replay,
    set_dotted,
    transition_key,
)

__all__ = [
    "PHASE_TRANSITIONS", "RUN_TRANSITIONS", "Amendment", "BudgetExhausted", "CheckOutcome", "DecisionKind",
    "DecisionRecord", "DecisionRecorded", "DecisionSignature", "Event", "Finish", "GateReached", "GateStep",
    "GateVisit", "NextStep", "PhaseFailed", "PhaseInstance", "PhaseReused", "PhaseStarted",
    "PhaseStatus", "PhaseStep", "PhaseSucceeded", "Plan", "PlanError", "ReachGate", "Resumed",
    "RunCompleted", "RunPhase", "RunStarted", "RunState", "RunStatus", "SpecAmended", "Step",
    "Stop", "apply", "decided_gates_after", "iteration_begin", "next_step", "param_paths",
    "parse_event", "replay", "restart_index", "set_dotted", "transition_key",
]
