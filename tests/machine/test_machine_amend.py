"""Unit tests of the `spec_amended` transition: where an amended run goes on, what it keeps."""

from __future__ import annotations

import copy

import pytest

from runner.errors import IllegalTransition
from runner.machine import (
    CheckOutcome,
    DecisionRecord,
    DecisionRecorded,
    GateReached,
    GateStep,
    PhaseFailed,
    PhaseStarted,
    PhaseStatus,
    PhaseStep,
    PhaseSucceeded,
    Plan,
    Resumed,
    RunCompleted,
    RunStarted,
    RunState,
    RunStatus,
    SpecAmended,
    apply,
    next_step,
    parse_event,
    restart_index,
)
from runner.machine.transitions import RunPhase

T = "2024-01-01T00:00:00Z"
PLAN = Plan((PhaseStep("make"), PhaseStep("qc"), GateStep("pilot", iterate_from="make"),
             PhaseStep("train"), PhaseStep("export")))
FROZEN = "f" * 64


def run(*events, plan: Plan = PLAN) -> RunState:
    """The state after RunStarted and `events`."""
    state = apply(None, RunStarted(run_id="r1", name="demo", params={"lr": 0.1}), plan)
    for event in events:
        state = apply(state, event, plan)
    return state


def done(name: str) -> tuple:
    """The events of one successful phase attempt."""
    return (PhaseStarted(name=name, fingerprint=f"fp-{name}", at=T),
            PhaseSucceeded(name=name, metrics={"m": 1.0}, wall_s=2.0, at=T))


GATE = GateReached(gate="pilot", checks=[CheckOutcome(expr="qc.m > 0", value=1.0, passed=True)],
                   packet_sha256="abc", at=T)
PROCEED = DecisionRecorded(decision=DecisionRecord(gate="pilot", iteration=1, decision="proceed",
                                                   reviewer="ann", reason="ok", at=T))
FAILED_TRAIN = (*done("make"), *done("qc"), GATE, PROCEED, Resumed(at=T),
                PhaseStarted(name="train", fingerprint="fp-train", at=T),
                PhaseFailed(name="train", error="bad with.lr", wall_s=3.0, at=T))


def amend(changed: list[str] | None = None, params: dict | None = None) -> SpecAmended:
    """A SpecAmended event naming `changed` phases."""
    return SpecAmended(frozen=FROZEN, old_sha256="old", new_sha256="new", params=params or {"lr": 0.2},
                       changed=changed or [], at=T)


def test_amend_of_a_failed_run_restarts_at_the_failed_phase():
    """Nothing changed before the failure: the run goes on at the failed phase, running."""
    state = apply(run(*FAILED_TRAIN), amend(), PLAN)
    assert state.status == RunStatus.RUNNING and state.failure is None
    assert next_step(state, PLAN) == RunPhase("train")
    assert state.instance("train", 1).status == PhaseStatus.PENDING


def test_amend_keeps_the_phases_before_the_restart():
    """Done, unchanged phases keep their status, metrics and fingerprint."""
    before = run(*FAILED_TRAIN)
    state = apply(before, amend(), PLAN)
    for name in ("make", "qc"):
        assert state.instance(name, 1) == before.instance(name, 1)


def test_amend_keeps_spent_seconds_of_a_reset_instance():
    """The failed instance is pending again but keeps its attempts and wall seconds."""
    state = apply(run(*FAILED_TRAIN), amend(), PLAN)
    train = state.instance("train", 1)
    assert (train.attempts, train.wall_s, train.error) == (1, 3.0, None)


def test_amend_sets_params_frozen_spec_and_amendments():
    """The event's params, frozen spec and an amendment entry are in the state."""
    state = apply(run(*FAILED_TRAIN), amend(params={"lr": 0.5}), PLAN)
    assert state.params == {"lr": 0.5} and state.frozen_spec == FROZEN
    assert [(a.old_sha256, a.new_sha256, a.frozen) for a in state.amendments] == [("old", "new", FROZEN)]


def test_amend_of_a_changed_phase_resets_it_and_every_later_one():
    """A changed phase and every phase after it are pending; the cursor is at it."""
    state = apply(run(*done("make"), *done("qc")), amend(changed=["qc"]), PLAN)
    assert next_step(state, PLAN) == RunPhase("qc")
    assert state.instance("make", 1).status == PhaseStatus.SUCCEEDED
    assert [state.instance(n, 1).status for n in ("qc", "train", "export")] == [PhaseStatus.PENDING] * 3


def test_amend_at_a_gate_drops_the_undecided_visit():
    """Awaiting a decision, an amend clears the pending gate so that it is reached anew."""
    state = apply(run(*done("make"), *done("qc"), GATE), amend(), PLAN)
    assert state.status == RunStatus.RUNNING and state.pending_gate is None
    assert state.gate_visits == [] and state.cursor == 2


def test_amend_that_would_pass_a_decided_gate_again_is_illegal():
    """Re-running a phase before a gate decided in this iteration is refused, state unchanged."""
    before = run(*FAILED_TRAIN)
    snapshot = copy.deepcopy(before)
    with pytest.raises(IllegalTransition, match="gate 'pilot' has a decision"):
        apply(before, amend(changed=["qc"]), PLAN)
    assert before == snapshot


def test_amend_of_a_ready_run_is_illegal():
    """A decision waiting for resume is applied first: spec_amended is not accepted in ready."""
    with pytest.raises(IllegalTransition):
        apply(run(*done("make"), *done("qc"), GATE, PROCEED), amend(), PLAN)


def test_amend_of_a_completed_run_is_illegal():
    """A completed run cannot be amended."""
    state = run(*FAILED_TRAIN, Resumed(at=T), *done("train"), *done("export"), RunCompleted(at=T))
    with pytest.raises(IllegalTransition):
        apply(state, amend(), PLAN)


def test_amend_adds_instances_for_new_phases():
    """A phase the new plan adds after the restart gets a pending instance."""
    new_plan = Plan((PhaseStep("make"), PhaseStep("qc"), GateStep("pilot", iterate_from="make"),
                     PhaseStep("train"), PhaseStep("check"), PhaseStep("export")))
    state = apply(run(*FAILED_TRAIN), amend(), new_plan)
    assert state.instance("check", 1) is not None and state.instance("check", 1).status == PhaseStatus.PENDING


def test_amend_inserting_a_phase_before_done_ones_restarts_there():
    """A new phase before done phases is where the run goes on."""
    new_plan = Plan((PhaseStep("make"), PhaseStep("clean"), PhaseStep("qc"), GateStep("pilot", iterate_from="make"),
                     PhaseStep("train")))
    state = run(*done("make"), *done("qc"))
    assert restart_index(state, new_plan, []) == 1
    after = apply(state, amend(), new_plan)
    assert next_step(after, new_plan) == RunPhase("clean")
    assert after.instance("qc", 1).status == PhaseStatus.PENDING


def test_amend_in_a_later_iteration_starts_at_that_iteration_s_first_phase():
    """In iteration 2 the phases before iterate_from are not part of the iteration."""
    plan = Plan((PhaseStep("make"), PhaseStep("qc"), GateStep("pilot", iterate_from="qc"), PhaseStep("train")))
    iterate = DecisionRecorded(decision=DecisionRecord(gate="pilot", iteration=1, decision="iterate",
                                                       reviewer="ann", reason="again", at=T))
    state = run(*done("make"), *done("qc"), GATE, iterate, Resumed(at=T), *done("qc"), plan=plan)
    assert state.iteration == 2
    assert restart_index(state, plan, []) == 2  # qc done, then the gate (not visited in i2)
    assert restart_index(state, plan, ["qc"]) == 1


def test_amend_event_round_trips_through_json():
    """spec_amended survives parse_event(model_dump(mode='json'))."""
    event = amend(changed=["qc"])
    assert parse_event(event.model_dump(mode="json")) == event
