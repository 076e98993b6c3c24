"""Read a run's state without the lock: for `status`, `gate`, `decide`, `plan --run`, `resume`.

The journal is the truth and `state.json` a cache of it: the snapshot is loaded and any
journal lines past it (a crash between the journal append and the snapshot write) are replayed
through the pure machine. Decisions recorded by `decide` but not yet journalled are folded in
with the same pure `apply`, so `status` shows `ready` or `aborted` as soon as one is recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import UsageError
from runner.machine import (
    DecisionRecord,
    DecisionRecorded,
    GateStep,
    PhaseStep,
    Plan,
    RunState,
    RunStatus,
    SpecAmended,
    apply,
    parse_event,
)
from runner.review.signing import signature_problem
from runner.spec import GateSpec, ResolvedSpec
from runner.store.journal import Journal
from runner.store.lock import holder_alive, read_holder
from runner.store.run_folder import RunFolder

__all__ = ["FrozenSpecs", "RunView", "load_frozen_spec", "open_view", "plan_of", "replay", "with_recorded_decision"]


def plan_of(spec: ResolvedSpec) -> Plan:
    """The machine's plan from a spec: its phases and gates in order."""
    steps: list[PhaseStep | GateStep] = []
    first_phase = next(s.name for s in spec.spec.phases if hasattr(s, "name"))
    for entry in spec.spec.phases:
        if isinstance(entry, GateSpec):
            steps.append(GateStep(
                name=entry.gate,
                iterate_from=entry.iterate_from or first_phase,
                may_set=tuple(entry.may_set) if entry.may_set is not None else None,
                max_iterations=entry.max_iterations,
                checks=tuple(entry.checks),
            ))
        else:
            steps.append(PhaseStep(name=entry.name))
    return Plan(steps=tuple(steps))


def load_frozen_spec(folder: RunFolder, frozen: str | None = None) -> ResolvedSpec:
    """A spec as resolved at `run` (`frozen` None) or at an amend (`frozen`: its content hash),
    frozen in the run folder (never the user's file)."""
    data = folder.read_frozen_spec(frozen)
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise UsageError(f"{folder.frozen_spec_path(frozen)}: cannot read the run's frozen spec ({exc})") from None
    return ResolvedSpec.from_frozen(obj)


class FrozenSpecs:
    """The run's frozen specs by id (None: the one of `run`), each loaded once with its plan:
    a journal replays each event under the plan in force when it was written."""

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        self._loaded: dict[str | None, tuple[ResolvedSpec, Plan]] = {}

    def spec(self, frozen: str | None) -> ResolvedSpec:
        """The frozen spec `frozen`."""
        return self._entry(frozen)[0]

    def plan(self, frozen: str | None) -> Plan:
        """The plan of the frozen spec `frozen`."""
        return self._entry(frozen)[1]

    def _entry(self, frozen: str | None) -> tuple[ResolvedSpec, Plan]:
        if frozen not in self._loaded:
            spec = load_frozen_spec(self.folder, frozen)
            self._loaded[frozen] = (spec, plan_of(spec))
        return self._loaded[frozen]


def replay(records: list[dict[str, Any]], specs: FrozenSpecs, snapshot: dict[str, Any] | None) -> RunState:
    """State after every journalled event: the snapshot plus the events it has not seen, each
    applied under the plan in force (a `spec_amended` event under the plan it puts in force)."""
    state: RunState | None = None
    if snapshot is not None and snapshot.get("seq", 0) <= len(records):
        state = RunState.model_validate(snapshot)
    start = state.seq if state is not None else 0
    for record in records[start:]:
        event = parse_event(record["event"])
        frozen = event.frozen if isinstance(event, SpecAmended) else (state.frozen_spec if state else None)
        state = apply(state, event, specs.plan(frozen))
    if state is None:
        raise UsageError("the run's journal is empty: it was never started")
    return state


def with_recorded_decision(state: RunState, plan: Plan, folder: RunFolder,
                           spec: ResolvedSpec | None = None) -> RunState:
    """Fold in a decision that `decide` recorded but no runner has journalled yet (not one
    that `spec`'s reviewers did not sign: the engine will not take it either)."""
    if state.status != RunStatus.AWAITING_DECISION or state.pending_gate is None:
        return state
    found = folder.decision_for(state.pending_gate, state.iteration)
    if found is None:
        return state
    record = DecisionRecord.model_validate(found)
    if spec is not None and signature_problem(record, state.run_id, spec.spec.reviewers) is not None:
        return state
    return apply(state, DecisionRecorded(decision=record), plan)


@dataclass
class RunView:
    """A run as the read-only commands see it."""

    folder: RunFolder
    spec: ResolvedSpec
    plan: Plan
    state: RunState  # decisions folded in
    journalled: RunState  # exactly what the journal says
    specs: FrozenSpecs | None = None  # every frozen spec of the run (amends), by id

    @property
    def status(self) -> str:
        """The contract's status: `interrupted` is `running` whose holder has died."""
        if self.state.status == RunStatus.RUNNING:
            holder = read_holder(self.folder.root)
            return "running" if holder is not None and holder_alive(holder) else "interrupted"
        return str(self.state.status)

    def gpu_seconds(self) -> float:
        """Wall seconds of phase instances that used CUDA (reused ones cost nothing)."""
        return sum(p.wall_s for p in self.state.phases if p.used_cuda and p.status != "reused")


def open_view(state_dir: Path, run_id: str) -> RunView:
    """Load a run for reading; `UsageError` (exit 2) when there is no such run."""
    folder = RunFolder(state_dir, run_id)
    if not folder.exists():
        raise UsageError(f"no run '{run_id}' in {state_dir} (see `runner status --state-dir {state_dir}`)")
    specs = FrozenSpecs(folder)
    specs.spec(None)  # a missing or unreadable spec.json is reported before the journal
    records = Journal(folder.events).read(repair=False).records
    journalled = replay(records, specs, folder.read_snapshot())
    spec, plan = specs.spec(journalled.frozen_spec), specs.plan(journalled.frozen_spec)
    state = with_recorded_decision(journalled, plan, folder, spec)
    return RunView(folder=folder, spec=spec, plan=plan, state=state, journalled=journalled, specs=specs)
