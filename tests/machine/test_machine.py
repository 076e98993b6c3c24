"""Unit tests of `runner.machine`: the plan check, each transition, each illegal case."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from runner.errors import IllegalTransition
from runner.machine import (
    PHASE_TRANSITIONS,
    RUN_TRANSITIONS,
    BudgetExhausted,
    CheckOutcome,
    DecisionRecord,
    DecisionRecorded,
    Finish,
    GateReached,
    GateStep,
    PhaseFailed,
    PhaseReused,
    PhaseStarted,
    PhaseStatus,
    PhaseStep,
    PhaseSucceeded,
    Plan,
    PlanError,
    ReachGate,
    Resumed,
    RunCompleted,
    RunPhase,
    RunStarted,
    RunState,
    RunStatus,
    Stop,
    apply,
    next_step,
    param_paths,
    parse_event,
    replay,
    set_dotted,
    transition_key,
)

PARAMS = {"response": {"temperature": 0.4, "max_new_tokens": 128}, "count": 3}
PLAN = Plan((PhaseStep("make"), PhaseStep("qc"),
             GateStep("pilot", iterate_from="qc", checks=("qc.rate < 0.05",)),
             PhaseStep("train")))
T = "2024-01-01T00:00:00Z"


def run(*events, plan: Plan = PLAN) -> RunState:
    """The state after RunStarted and `events`."""
    state = apply(None, RunStarted(run_id="r1", name="demo", params=PARAMS), plan)
    for event in events:
        state = apply(state, event, plan)
    return state


def done(name: str, **metrics: float) -> tuple:
    """The events of one successful phase attempt."""
    return (PhaseStarted(name=name, fingerprint=f"fp-{name}", at=T),
            PhaseSucceeded(name=name, metrics=metrics, wall_s=1.5, at=T))


def decision(kind: str = "proceed", gate: str = "pilot", iteration: int = 1, **kw) -> DecisionRecorded:
    """A DecisionRecorded event."""
    return DecisionRecorded(decision=DecisionRecord(gate=gate, iteration=iteration, decision=kind,
                                                    reviewer="ann", reason="ok", at=T, **kw))


GATE = GateReached(gate="pilot", checks=[CheckOutcome(expr="qc.rate < 0.05", value=0.01,
                                                      passed=True)], packet_sha256="abc", at=T)
AT_GATE = (*done("make"), *done("qc", rate=0.01), GATE)


def illegal(state: RunState | None, event, plan: Plan = PLAN) -> IllegalTransition:
    """Apply `event`, expecting IllegalTransition, and check `state` is unchanged."""
    before = copy.deepcopy(state)
    with pytest.raises(IllegalTransition) as info:
        apply(state, event, plan)
    assert state == before
    return info.value


# -------------------------------------------------------------------------------- plan


def test_plan_accepts_a_valid_definition():
    """A plan with unique names and a gate iterating from an earlier phase is accepted."""
    assert PLAN.phase_names == ("make", "qc", "train")


def test_plan_rejects_duplicate_names():
    """Two steps with one name are refused."""
    with pytest.raises(PlanError, match="already used"):
        Plan((PhaseStep("a"), PhaseStep("a")))


def test_plan_rejects_iterate_from_after_the_gate():
    """A gate's iterate_from must be a phase before it."""
    with pytest.raises(PlanError, match="not a phase before the gate"):
        Plan((PhaseStep("a"), GateStep("g", iterate_from="b"), PhaseStep("b")))


def test_plan_rejects_iterate_from_a_gate():
    """A gate's iterate_from cannot name another gate."""
    with pytest.raises(PlanError, match="iterate_from 'g1'"):
        Plan((PhaseStep("a"), GateStep("g1", iterate_from="a"), GateStep("g2", iterate_from="g1")))


def test_plan_rejects_a_plan_without_phases():
    """A plan needs at least one phase."""
    with pytest.raises(PlanError, match="no phase"):
        Plan(())


def test_plan_rejects_max_iterations_below_one():
    """max_iterations must be at least 1."""
    with pytest.raises(PlanError, match="max_iterations"):
        Plan((PhaseStep("a"), GateStep("g", iterate_from="a", max_iterations=0)))


def test_plan_lists_every_problem():
    """Every problem of a plan is reported at once."""
    with pytest.raises(PlanError) as info:
        Plan((GateStep("g", iterate_from="x"), GateStep("g", iterate_from="y")))
    assert len(info.value.problems) == 4


def test_plan_error_is_a_value_error():
    """PlanError is a ValueError, as the caller expects."""
    assert issubclass(PlanError, ValueError)


# ---------------------------------------------------------------------------- run start


def test_run_started_creates_pending_instances():
    """RunStarted: running, iteration 1, cursor 0, a pending instance per phase."""
    state = run()
    assert (state.status, state.iteration, state.cursor, state.seq) == ("running", 1, 0, 1)
    assert [(p.name, p.iteration, p.status) for p in state.phases] == [
        ("make", 1, "pending"), ("qc", 1, "pending"), ("train", 1, "pending")]


def test_run_started_twice_is_illegal():
    """A second RunStarted is refused in state running."""
    err = illegal(run(), RunStarted(run_id="r1", name="demo"))
    assert (err.state, err.event) == ("running", "run_started")


def test_event_before_run_started_is_illegal():
    """Any event before RunStarted is refused in state none."""
    err = illegal(None, PhaseStarted(name="make", at=T))
    assert (err.state, err.event) == ("none", "phase_started")


# ------------------------------------------------------------------------------- phases


def test_phase_started_marks_the_instance_running():
    """PhaseStarted: pending -> running, attempts 1, fingerprint and start time stored."""
    inst = run(PhaseStarted(name="make", fingerprint="f", at=T)).instance("make", 1)
    assert (inst.status, inst.attempts, inst.fingerprint, inst.started_at) == (
        "running", 1, "f", T)


def test_phase_started_for_a_phase_not_at_the_cursor_is_illegal():
    """PhaseStarted for a later phase is refused (run state, detail names the cursor)."""
    err = illegal(run(), PhaseStarted(name="qc", at=T))
    assert (err.state, err.event) == ("running", "phase_started")
    assert "'make'" in err.detail


def test_phase_started_twice_is_illegal():
    """PhaseStarted on a running instance is refused by the phase table."""
    err = illegal(run(PhaseStarted(name="make", at=T)), PhaseStarted(name="make", at=T))
    assert (err.state, err.event) == ("running", "phase_started")
    assert "phase 'make' is running" in err.detail


def test_phase_succeeded_advances_the_cursor():
    """PhaseSucceeded: running -> succeeded, metrics stored, cursor + 1."""
    state = run(*done("make", n=3.0))
    inst = state.instance("make", 1)
    assert (inst.status, inst.metrics, inst.wall_s, state.cursor) == ("succeeded", {"n": 3.0},
                                                                      1.5, 1)


def test_phase_succeeded_without_start_is_illegal():
    """PhaseSucceeded for a pending instance is refused with the phase's status."""
    err = illegal(run(), PhaseSucceeded(name="make", at=T))
    assert (err.state, err.event) == ("pending", "phase_succeeded")


def test_phase_succeeded_for_another_phase_is_illegal():
    """PhaseSucceeded naming a phase other than the cursor's is refused."""
    err = illegal(run(PhaseStarted(name="make", at=T)), PhaseSucceeded(name="qc", at=T))
    assert (err.state, err.event) == ("running", "phase_succeeded")


def test_phase_failed_fails_the_run():
    """PhaseFailed: instance failed, run failed, failure = error, cursor unchanged."""
    state = run(PhaseStarted(name="make", at=T),
                PhaseFailed(name="make", error="boom", wall_s=2.0, used_cuda=True, at=T))
    inst = state.instance("make", 1)
    assert (state.status, state.failure, state.cursor) == ("failed", "boom", 0)
    assert (inst.status, inst.error, inst.wall_s, inst.used_cuda) == ("failed", "boom", 2.0, True)


def test_phase_started_while_failed_is_illegal():
    """A failed run must be resumed before a phase starts again."""
    state = run(PhaseStarted(name="make", at=T), PhaseFailed(name="make", error="x", at=T))
    err = illegal(state, PhaseStarted(name="make", at=T))
    assert (err.state, err.event) == ("failed", "phase_started")


def test_resumed_from_failed_allows_a_retry():
    """Resumed from failed: running, failure cleared; the retry sums attempts and wall time."""
    state = run(PhaseStarted(name="make", at=T),
                PhaseFailed(name="make", error="x", wall_s=1.0, at=T), Resumed(at=T))
    assert (state.status, state.failure) == ("running", None)
    state = apply(apply(state, PhaseStarted(name="make", at=T), PLAN),
                  PhaseSucceeded(name="make", wall_s=2.0, at=T), PLAN)
    inst = state.instance("make", 1)
    assert (inst.status, inst.attempts, inst.wall_s, inst.error) == ("succeeded", 2, 3.0, None)


def test_phase_reused_copies_metrics():
    """PhaseReused: pending -> reused, metrics and reused_from set, cursor + 1."""
    state = run(*AT_GATE, decision("iterate"), Resumed(at=T),
                PhaseReused(name="qc", fingerprint="fp-qc", source_iteration=1,
                            metrics={"rate": 0.01}, at=T))
    inst = state.instance("qc", 2)
    assert (inst.status, inst.reused_from, inst.metrics, state.cursor) == (
        "reused", 1, {"rate": 0.01}, 2)


def test_phase_reused_without_a_source_is_illegal():
    """PhaseReused naming an iteration with no succeeded instance is refused."""
    err = illegal(run(), PhaseReused(name="make", source_iteration=1, at=T))
    assert (err.state, err.event) == ("running", "phase_reused")


def test_phase_reused_after_start_is_illegal():
    """PhaseReused for a running instance is refused by the phase table."""
    state = run(*AT_GATE, decision("iterate"), Resumed(at=T), PhaseStarted(name="qc", at=T))
    err = illegal(state, PhaseReused(name="qc", source_iteration=1, at=T))
    assert (err.state, err.event) == ("running", "phase_reused")
    assert "phase 'qc' is running" in err.detail


# -------------------------------------------------------------------------------- gates


def test_gate_reached_awaits_a_decision():
    """GateReached: awaiting_decision, pending_gate set, a visit recorded."""
    state = run(*AT_GATE)
    assert (state.status, state.pending_gate, state.current_visit().packet_sha256) == (
        "awaiting_decision", "pilot", "abc")


def test_gate_reached_not_at_the_cursor_is_illegal():
    """GateReached while a phase is at the cursor is refused."""
    err = illegal(run(), GateReached(gate="pilot", at=T))
    assert (err.state, err.event) == ("running", "gate_reached")


def test_decision_proceed_makes_the_run_ready():
    """A proceed decision: ready, stored, pending_gate kept, iteration unchanged."""
    state = run(*AT_GATE, decision("proceed"))
    assert (state.status, state.pending_gate, state.iteration) == ("ready", "pilot", 1)
    assert state.pending_decision().decision == "proceed"


def test_decision_abort_aborts_the_run():
    """An abort decision: aborted."""
    assert run(*AT_GATE, decision("abort")).status == "aborted"


def test_decision_for_another_gate_is_illegal():
    """A decision naming a gate that is not pending is refused."""
    err = illegal(run(*AT_GATE), decision(gate="other"))
    assert (err.state, err.event) == ("awaiting_decision", "decision_recorded")


def test_decision_for_another_iteration_is_illegal():
    """A decision for another iteration than the visit's is refused."""
    err = illegal(run(*AT_GATE), decision(iteration=2))
    assert "iteration 2" in err.detail


def test_second_decision_is_illegal():
    """A second decision on the same visit is refused in state ready."""
    err = illegal(run(*AT_GATE, decision()), decision("abort"))
    assert (err.state, err.event) == ("ready", "decision_recorded")


def test_decision_while_running_is_illegal():
    """A decision while no gate is pending is refused."""
    err = illegal(run(), decision())
    assert (err.state, err.event) == ("running", "decision_recorded")


def test_decision_with_set_and_proceed_is_illegal():
    """'set' with a proceed decision is refused."""
    err = illegal(run(*AT_GATE), decision("proceed", set={"count": 4}))
    assert "iterate only" in err.detail


def test_decision_with_unknown_set_path_is_illegal():
    """'set' naming an unknown parameter is refused."""
    err = illegal(run(*AT_GATE), decision("iterate", set={"response.temp": 1}))
    assert "response.temp" in err.detail


# ------------------------------------------------------------------------------ resumed


def test_resumed_proceed_moves_past_the_gate():
    """Resumed from ready with proceed: running, cursor past the gate, no pending gate."""
    state = run(*AT_GATE, decision("proceed"), Resumed(at=T))
    assert (state.status, state.cursor, state.pending_gate) == ("running", 3, None)


def test_resumed_iterate_starts_a_new_iteration():
    """Resumed with iterate: iteration 2, cursor at iterate_from, no pending gate."""
    state = run(*AT_GATE, decision("iterate"), Resumed(at=T))
    assert (state.status, state.iteration, state.cursor, state.pending_gate) == (
        "running", 2, 1, None)


def test_resumed_iterate_replans_instances():
    """Iterate drops pending instances and adds pending ones from iterate_from to the end."""
    state = run(*AT_GATE, decision("iterate"), Resumed(at=T))
    assert [(p.name, p.iteration, p.status) for p in state.phases] == [
        ("make", 1, "succeeded"), ("qc", 1, "succeeded"), ("qc", 2, "pending"),
        ("train", 2, "pending")]


def test_resumed_iterate_sets_params():
    """Iterate replaces each 'set' dotted path in the effective params."""
    state = run(*AT_GATE, decision("iterate", set={"response.temperature": 0.3}), Resumed(at=T))
    assert state.params == {"response": {"temperature": 0.3, "max_new_tokens": 128}, "count": 3}


def test_resumed_from_running_resets_the_running_instance():
    """Crash recovery: a running instance goes back to pending; the run stays running."""
    state = run(PhaseStarted(name="make", at=T), Resumed(at=T))
    inst = state.instance("make", 1)
    assert (state.status, inst.status, inst.attempts) == ("running", "pending", 1)


def test_resumed_while_awaiting_decision_is_illegal():
    """Resumed at a gate with no decision is refused."""
    err = illegal(run(*AT_GATE), Resumed(at=T))
    assert (err.state, err.event) == ("awaiting_decision", "resumed")


def test_resumed_after_abort_is_illegal():
    """Resumed of an aborted run is refused."""
    err = illegal(run(*AT_GATE, decision("abort")), Resumed(at=T))
    assert (err.state, err.event) == ("aborted", "resumed")


def test_resumed_after_completion_is_illegal():
    """Resumed of a completed run is refused."""
    plan = Plan((PhaseStep("a"),))
    state = run(*done("a"), RunCompleted(at=T), plan=plan)
    err = illegal(state, Resumed(at=T), plan)
    assert (err.state, err.event) == ("completed", "resumed")


# ------------------------------------------------------------------- completion, budget


def test_run_completed_at_the_end():
    """RunCompleted after the last step: completed."""
    state = run(*AT_GATE, decision(), Resumed(at=T), *done("train"), RunCompleted(at=T))
    assert state.status == "completed"


def test_run_completed_before_the_end_is_illegal():
    """RunCompleted with steps left is refused."""
    err = illegal(run(*done("make")), RunCompleted(at=T))
    assert (err.state, err.event) == ("running", "run_completed")


def test_budget_exhausted_fails_the_run():
    """BudgetExhausted: failed with the reason as failure."""
    state = run(BudgetExhausted(reason="budget spent", at=T))
    assert (state.status, state.failure) == ("failed", "budget spent")


def test_budget_exhausted_while_a_phase_runs_is_illegal():
    """BudgetExhausted while a phase is running is refused."""
    err = illegal(run(PhaseStarted(name="make", at=T)), BudgetExhausted(reason="x", at=T))
    assert (err.state, err.event) == ("running", "budget_exhausted")


def test_budget_exhausted_at_a_gate_is_illegal():
    """BudgetExhausted while awaiting a decision is refused."""
    err = illegal(run(*AT_GATE), BudgetExhausted(reason="x", at=T))
    assert (err.state, err.event) == ("awaiting_decision", "budget_exhausted")


# ---------------------------------------------------------------------------- next step


def test_next_step_runs_the_phase_at_the_cursor():
    """next_step at a phase: RunPhase."""
    assert next_step(run(), PLAN) == RunPhase("make")


def test_next_step_reaches_the_gate_at_the_cursor():
    """next_step at a gate: ReachGate."""
    assert next_step(run(*AT_GATE[:-1]), PLAN) == ReachGate("pilot")


def test_next_step_finishes_past_the_end():
    """next_step past the last step: Finish."""
    assert next_step(run(*AT_GATE, decision(), Resumed(at=T), *done("train")), PLAN) == Finish()


def test_next_step_stops_when_not_running():
    """next_step of a run that is not running: Stop with its status."""
    assert next_step(run(*AT_GATE), PLAN) == Stop(RunStatus.AWAITING_DECISION)


# --------------------------------------------------------------------- apply properties


def test_apply_does_not_mutate_the_state():
    """apply returns a new state and leaves the old one as it was."""
    state = run(*done("make"))
    before = copy.deepcopy(state)
    apply(state, PhaseStarted(name="qc", at=T), PLAN)
    assert state == before


def test_apply_counts_events_in_seq():
    """seq is the number of events applied."""
    assert run(*AT_GATE).seq == 6


def test_replay_rebuilds_the_state():
    """replay folds events from no run into the same state as stepwise apply."""
    events = [RunStarted(run_id="r1", name="demo", params=PARAMS), *AT_GATE]
    assert replay(events, PLAN) == run(*AT_GATE)


def test_state_json_round_trip():
    """A state survives model_dump(mode='json') and model_validate exactly."""
    state = run(*AT_GATE, decision("iterate", set={"count": 5}), Resumed(at=T),
                PhaseReused(name="qc", source_iteration=1, metrics={"rate": 0.01}, at=T))
    assert RunState.model_validate(state.model_dump(mode="json")) == state


def test_event_json_round_trip():
    """Every event kind survives parse_event(model_dump(mode='json'))."""
    events = [RunStarted(run_id="r", name="n", params=PARAMS), *AT_GATE, decision(),
              PhaseReused(name="a", source_iteration=1, at=T), PhaseFailed(name="a", error="e", at=T),
              Resumed(at=T), RunCompleted(at=T), BudgetExhausted(reason="b", at=T)]
    assert [parse_event(e.model_dump(mode="json")) for e in events] == events


def test_parse_event_rejects_an_unknown_kind():
    """parse_event refuses an object of no known kind."""
    with pytest.raises(ValidationError):
        parse_event({"kind": "exploded", "at": T})


# ---------------------------------------------------------------------- tables, helpers


def test_transition_tables_name_only_known_event_kinds():
    """Every key of both tables names an event kind the union defines."""
    kinds = {"run_started", "phase_started", "phase_succeeded", "phase_reused", "phase_failed",
             "gate_reached", "decision_recorded", "resumed", "run_completed", "budget_exhausted",
             "spec_amended"}
    keys = {k.partition(":")[0] for _, k in [*RUN_TRANSITIONS, *PHASE_TRANSITIONS]}
    assert keys <= kinds


def test_transition_key_refines_decisions():
    """A decision's transition key carries its decision kind."""
    assert transition_key(decision("abort")) == "decision_recorded:abort"


def test_phase_table_has_no_way_out_of_succeeded_but_an_amend():
    """Succeeded and reused instances are final in the phase table, but for an amend."""
    out = [k for k in PHASE_TRANSITIONS if k[0] in (PhaseStatus.SUCCEEDED, PhaseStatus.REUSED)]
    assert {k[1] for k in out} == {"spec_amended"}


def test_set_dotted_replaces_a_nested_value_without_mutating():
    """set_dotted returns a copy with the dotted path replaced."""
    new = set_dotted(PARAMS, "response.temperature", 0.1)
    assert (new["response"]["temperature"], PARAMS["response"]["temperature"]) == (0.1, 0.4)


def test_set_dotted_refuses_an_unknown_path():
    """set_dotted raises KeyError for a path that does not exist."""
    with pytest.raises(KeyError):
        set_dotted(PARAMS, "count.x", 1)


def test_param_paths_lists_parents_and_leaves():
    """param_paths lists every dotted path, parents included."""
    assert param_paths(PARAMS) == {"response", "response.temperature", "response.max_new_tokens",
                                   "count"}


def test_latest_instance_skips_pending_ones():
    """latest_instance is the latest succeeded-or-reused instance."""
    state = run(*AT_GATE, decision("iterate"), Resumed(at=T))
    assert state.latest_instance("qc").iteration == 1


def test_pending_decision_is_none_before_a_decision():
    """pending_decision is None while the gate awaits a decision."""
    assert run(*AT_GATE).pending_decision() is None
