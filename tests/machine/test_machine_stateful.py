"""A hypothesis state-machine test of `runner.machine` and `runner.review.decisions` on random plans.

Each rule sends one event (legal or not). A small oracle says whether it is legal; a legal one
must be accepted, an illegal one must raise `IllegalTransition` and leave the state as it was.
The invariants hold after every step, including replay from the accepted events.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from runner.errors import IllegalTransition
from runner.machine import (
    BudgetExhausted,
    CheckOutcome,
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
    replay,
)
from runner.review.decisions import DecisionRequest, refusals, to_record

PARAMS = {"a": {"x": 1, "y": 2}, "b": 3}
PATHS = sorted(param_paths(PARAMS))
T = "2024-01-01T00:00:00Z"


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """A valid plan of 2-5 phases and 0-2 gates, each gate after at least one phase."""
    phases = [f"p{i}" for i in range(draw(st.integers(2, 5)))]
    n_gates = draw(st.integers(0, 2))
    after = sorted(draw(st.lists(st.integers(0, len(phases) - 1), min_size=n_gates,
                                 max_size=n_gates)))
    steps: list[PhaseStep | GateStep] = []
    for k, name in enumerate(phases):
        steps.append(PhaseStep(name))
        for _ in range(after.count(k)):
            gates = sum(isinstance(s, GateStep) for s in steps)
            may_set = draw(st.none() | st.lists(st.sampled_from(PATHS), max_size=2, unique=True)
                           .map(tuple))
            steps.append(GateStep(f"g{gates}", iterate_from=draw(st.sampled_from(phases[:k + 1])),
                                  may_set=may_set, max_iterations=draw(st.none() | st.integers(1, 3)),
                                  checks=("p0.m < 1", "p0.n > 0")))
    return Plan(tuple(steps))


class RunMachine(RuleBasedStateMachine):
    """Random events against the machine, checked by an oracle and invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.plan: Plan = Plan((PhaseStep("p0"),))
        self.state: RunState | None = None
        self.events: list = []
        self.iterates = 0

    # ----------------------------------------------------------------------- helpers

    def send(self, event, legal: bool) -> None:
        """Apply `event`: accepted if `legal`, else IllegalTransition and no change."""
        if legal:
            self.state = apply(self.state, event, self.plan)
            self.events.append(event)
            return
        before = copy.deepcopy(self.state)
        with pytest.raises(IllegalTransition) as info:
            apply(self.state, event, self.plan)
        assert info.value.event == event.kind
        assert self.state == before

    def cursor_step(self) -> PhaseStep | GateStep | None:
        """The step at the cursor, or None past the end."""
        steps = self.plan.steps
        return steps[self.state.cursor] if self.state.cursor < len(steps) else None

    def pick_phase(self, data: st.DataObject) -> str:
        """A phase name, most often the one at the cursor."""
        step = self.cursor_step()
        biased = [step.name] * 4 if isinstance(step, PhaseStep) else []
        return data.draw(st.sampled_from(biased + list(self.plan.phase_names)))

    def at_cursor(self, name: str, *statuses: PhaseStatus) -> bool:
        """The run is running, phase `name` is at the cursor and its instance is in `statuses`."""
        step = self.cursor_step()
        inst = self.state.instance(name, self.state.iteration)
        return (self.state.status == RunStatus.RUNNING and isinstance(step, PhaseStep)
                and step.name == name and inst is not None and inst.status in statuses)

    # ------------------------------------------------------------------------- rules

    @initialize(plan=plans())
    def start(self, plan: Plan) -> None:
        """Start a run on a random plan."""
        self.plan = plan
        self.send(RunStarted(run_id="r", name="n", params=PARAMS), legal=True)

    @rule()
    def start_again(self) -> None:
        """A second RunStarted is always illegal."""
        self.send(RunStarted(run_id="r", name="n", params=PARAMS), legal=False)

    @rule(data=st.data())
    def phase_start(self, data: st.DataObject) -> None:
        """Start a phase."""
        name = self.pick_phase(data)
        self.send(PhaseStarted(name=name, fingerprint="f", at=T),
                  self.at_cursor(name, PhaseStatus.PENDING, PhaseStatus.FAILED))

    @rule(data=st.data(), m=st.floats(0, 2), wall=st.floats(0, 10))
    def phase_succeed(self, data: st.DataObject, m: float, wall: float) -> None:
        """Finish a phase successfully."""
        name = self.pick_phase(data)
        self.send(PhaseSucceeded(name=name, metrics={"m": m}, wall_s=wall, at=T),
                  self.at_cursor(name, PhaseStatus.RUNNING))

    @rule(data=st.data(), rare=st.integers(0, 3))
    def phase_fail(self, data: st.DataObject, rare: int) -> None:
        """Fail a phase (in one draw of four, so that runs get far)."""
        if rare:
            return
        name = self.pick_phase(data)
        self.send(PhaseFailed(name=name, error="boom", wall_s=1.0, at=T),
                  self.at_cursor(name, PhaseStatus.RUNNING))

    @rule(data=st.data())
    def phase_reuse(self, data: st.DataObject) -> None:
        """Reuse an earlier iteration's instance of a phase."""
        name = self.pick_phase(data)
        latest = self.state.latest_instance(name)
        biased = [latest.iteration] * 3 if latest is not None else []
        source = data.draw(st.sampled_from([*biased, *range(1, self.state.iteration + 1)]))
        src = self.state.instance(name, source)
        legal = (self.at_cursor(name, PhaseStatus.PENDING) and source < self.state.iteration
                 and src is not None and src.status in (PhaseStatus.SUCCEEDED, PhaseStatus.REUSED))
        self.send(PhaseReused(name=name, source_iteration=source, metrics={"m": 0.5}, at=T), legal)

    @rule(data=st.data())
    def gate_reached(self, data: st.DataObject) -> None:
        """Reach a gate, with random check outcomes."""
        step = self.cursor_step()
        biased = [step.name] * 4 if isinstance(step, GateStep) else []
        gate = data.draw(st.sampled_from([*biased, *self.plan.gate_names, "nope"]))
        passed = data.draw(st.lists(st.booleans(), min_size=2, max_size=2))
        checks = [CheckOutcome(expr=e, value=0.5 if ok else None, passed=ok)
                  for e, ok in zip(("p0.m < 1", "p0.n > 0"), passed, strict=True)]
        legal = (self.state.status == RunStatus.RUNNING and isinstance(step, GateStep)
                 and step.name == gate)
        self.send(GateReached(gate=gate, checks=checks, packet_sha256="sha-1", at=T), legal)

    @rule(data=st.data())
    def decide(self, data: st.DataObject) -> None:
        """Ask a random decision: refusals must match the oracle; accepted ones are applied."""
        state, draw = self.state, data.draw
        gate = draw(st.sampled_from([state.pending_gate or "nope"] * 4
                                    + [*self.plan.gate_names, "nope"]))
        kind = draw(st.sampled_from(["proceed", "iterate", "abort"]))
        sets = draw(st.sampled_from([{}, {}, {"a.x": 5}, {"a": {"x": 0, "y": 0}}, {"b": 9},
                                     {"a.z": 1}]))
        req = DecisionRequest(gate=gate, decision=kind, set=sets,
                              reviewer=draw(st.sampled_from(["ann", "ann", ""])), reason="r",
                              packet_sha256=draw(st.sampled_from([None, "sha-1", "bad"])),
                              override_checks=draw(st.booleans()))
        iteration = state.iteration + draw(st.sampled_from([0, 0, 0, 1]))
        pending = state.status == RunStatus.AWAITING_DECISION and state.pending_gate == gate
        plan_gate = self.plan.gate(gate)
        visit = state.gate_visits[-1] if pending else None
        unknown = [k for k in sets if k not in param_paths(state.params)]
        expected = [not pending, bool(sets) and kind != "iterate", *(True for _ in unknown),
                    *(True for k in sets if k not in unknown and plan_gate is not None
                      and plan_gate.may_set is not None
                      and not any(k == p or k.startswith(p + ".") for p in plan_gate.may_set)),
                    pending and req.packet_sha256 not in (None, visit.packet_sha256),
                    pending and kind == "proceed" and not req.override_checks
                    and not all(c.passed for c in visit.checks),
                    pending and kind == "iterate" and plan_gate.max_iterations is not None
                    and len(state.visits(gate)) >= plan_gate.max_iterations,
                    req.reviewer == ""]
        got = refusals(state, self.plan, req, param_paths(state.params))
        assert len(got) == sum(expected), (got, expected)
        machine_legal = (pending and iteration == state.iteration and not unknown
                         and (not sets or kind == "iterate"))
        if got and machine_legal:
            return  # refused by policy: the engine never journals it
        self.send(DecisionRecorded(decision=to_record(req, iteration, T)), machine_legal)

    @rule(data=st.data(), steps=st.integers(1, 4))
    def advance(self, data: st.DataObject, steps: int) -> None:
        """Take 1-4 steps next_step asks for (run or reuse a phase, reach a gate, decide...)."""
        for _ in range(steps):
            self.advance_once(data)

    def advance_once(self, data: st.DataObject) -> None:
        """Take the step next_step asks for."""
        step = next_step(self.state, self.plan)
        if isinstance(step, RunPhase):
            how = data.draw(st.sampled_from(["run", "run", "reuse", "start"]))
            inst = self.state.latest_instance(step.name)
            if how == "reuse" and inst is not None and self.at_cursor(step.name,
                                                                      PhaseStatus.PENDING):
                self.send(PhaseReused(name=step.name, source_iteration=inst.iteration,
                                      metrics=dict(inst.metrics), at=T), legal=True)
                return
            if not self.at_cursor(step.name, PhaseStatus.RUNNING):
                self.send(PhaseStarted(name=step.name, at=T), legal=True)
            if how != "start":  # "start" leaves the phase running for other rules to meet
                self.send(PhaseSucceeded(name=step.name, metrics={"m": 0.5}, at=T), legal=True)
        elif isinstance(step, ReachGate):
            passed = data.draw(st.booleans())
            checks = [CheckOutcome(expr="p0.m < 1", value=0.5 if passed else None, passed=passed)]
            self.send(GateReached(gate=step.gate, checks=checks, packet_sha256="sha-1", at=T),
                      legal=True)
        elif isinstance(step, Finish):
            self.send(RunCompleted(at=T), legal=True)
        elif step == Stop(RunStatus.AWAITING_DECISION):
            self.good_decision(data)
        elif step in (Stop(RunStatus.READY), Stop(RunStatus.FAILED)):
            self.resumed()

    def good_decision(self, data: st.DataObject) -> None:
        """Record a decision that refusals accept (iterate most often, to reach iteration 3)."""
        state, gate = self.state, self.plan.gate(self.state.pending_gate)
        kind = data.draw(st.sampled_from(["iterate", "iterate", "proceed", "abort"]))
        if kind == "iterate" and gate.max_iterations is not None \
                and len(state.visits(gate.name)) >= gate.max_iterations:
            kind = "proceed"
        allowed = [k for k in ("a.x", "b") if gate.may_set is None
                   or any(k == p or k.startswith(p + ".") for p in gate.may_set)]
        sets = {allowed[0]: state.iteration} if kind == "iterate" and allowed else {}
        req = DecisionRequest(gate=gate.name, decision=kind, reviewer="ann", reason="r", set=sets,
                              packet_sha256="sha-1", override_checks=kind == "proceed")
        assert refusals(state, self.plan, req, param_paths(state.params)) == []
        self.send(DecisionRecorded(decision=to_record(req, state.iteration, T)), legal=True)

    def resumed(self) -> None:
        """Send Resumed; count an applied iterate decision."""
        state = self.state
        decision = state.pending_decision() if state.status == RunStatus.READY else None
        self.send(Resumed(at=T), state.status in (RunStatus.READY, RunStatus.FAILED,
                                                  RunStatus.RUNNING))
        if decision is not None and decision.decision == "iterate":
            self.iterates += 1

    @rule()
    def resume(self) -> None:
        """Resume the run (applies a decision, retries a failure, or is refused)."""
        self.resumed()

    @rule()
    def crash(self) -> None:
        """The holder died: the next holder sends Resumed; no instance is left running."""
        self.resumed()
        assert self.state.running_instance() is None

    @rule()
    def complete(self) -> None:
        """Complete the run."""
        legal = (self.state.status == RunStatus.RUNNING
                 and self.state.cursor == len(self.plan.steps))
        self.send(RunCompleted(at=T), legal)

    @rule(rare=st.integers(0, 3))
    def budget(self, rare: int) -> None:
        """Exhaust the budget (in one draw of four, so that runs get far)."""
        if rare:
            return
        legal = self.state.status == RunStatus.RUNNING and self.state.running_instance() is None
        self.send(BudgetExhausted(reason="spent", at=T), legal)

    # -------------------------------------------------------------------- invariants

    @invariant()
    def one_running_instance_only_while_running(self) -> None:
        """At most one running instance, and only while the run is running."""
        running = [p for p in self.state.phases if p.status == PhaseStatus.RUNNING]
        assert len(running) <= 1
        assert not running or self.state.status == RunStatus.RUNNING

    @invariant()
    def pending_gate_matches_status(self) -> None:
        """pending_gate is set iff a gate awaits, is decided, or aborted the run."""
        waiting = (RunStatus.AWAITING_DECISION, RunStatus.READY, RunStatus.ABORTED)
        assert (self.state.pending_gate is not None) == (self.state.status in waiting)

    @invariant()
    def iteration_counts_iterates(self) -> None:
        """iteration is 1 + the number of applied iterate decisions."""
        assert self.state.iteration == 1 + self.iterates

    @invariant()
    def cursor_in_range(self) -> None:
        """The cursor stays within [0, len(steps)]."""
        assert 0 <= self.state.cursor <= len(self.plan.steps)

    @invariant()
    def instances_unique(self) -> None:
        """(name, iteration) is unique among instances."""
        keys = [(p.name, p.iteration) for p in self.state.phases]
        assert len(keys) == len(set(keys))

    @invariant()
    def seq_counts_events(self) -> None:
        """seq is the number of accepted events."""
        assert self.state.seq == len(self.events)

    @invariant()
    def replay_gives_the_same_state(self) -> None:
        """Replaying the accepted events from scratch gives an equal state."""
        assert replay(self.events, self.plan) == self.state

    @invariant()
    def json_round_trip(self) -> None:
        """The state survives a JSON round trip."""
        assert RunState.model_validate(self.state.model_dump(mode="json")) == self.state


RunMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=60, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
TestRunMachine = RunMachine.TestCase
