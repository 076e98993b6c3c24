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
    apply,
    parse_event,
)
from runner.spec import GateSpec, ResolvedSpec
from runner.store.journal import Journal
from runner.store.lock import holder_alive, read_holder
from runner.store.run_folder import RunFolder

__all__ = ["RunView", "load_frozen_spec", "open_view", "plan_of", "replay", "with_recorded_decision"]


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


def load_frozen_spec(folder: RunFolder) -> ResolvedSpec:
    """The spec as resolved at `run`, frozen in the run folder (never the user's file)."""
    try:
        data = json.loads(folder.spec_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{folder.spec_json}: cannot read the run's frozen spec ({exc})") from None
    return ResolvedSpec.from_frozen(data)


def replay(records: list[dict[str, Any]], plan: Plan, snapshot: dict[str, Any] | None) -> RunState:
    """State after every journalled event: the snapshot plus the events it has not seen."""
    state: RunState | None = None
    if snapshot is not None and snapshot.get("seq", 0) <= len(records):
        state = RunState.model_validate(snapshot)
    start = state.seq if state is not None else 0
    for record in records[start:]:
        state = apply(state, parse_event(record["event"]), plan)
    if state is None:
        raise UsageError("the run's journal is empty: it was never started")
    return state


def with_recorded_decision(state: RunState, plan: Plan, folder: RunFolder) -> RunState:
    """Fold in a decision that `decide` recorded but no runner has journalled yet."""
    if state.status != RunStatus.AWAITING_DECISION or state.pending_gate is None:
        return state
    found = folder.decision_for(state.pending_gate, state.iteration)
    if found is None:
        return state
    return apply(state, DecisionRecorded(decision=DecisionRecord.model_validate(found)), plan)


@dataclass
class RunView:
    """A run as the read-only commands see it."""

    folder: RunFolder
    spec: ResolvedSpec
    plan: Plan
    state: RunState  # decisions folded in
    journalled: RunState  # exactly what the journal says

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
    spec = load_frozen_spec(folder)
    plan = plan_of(spec)
    records = Journal(folder.events).read(repair=False).records
    journalled = replay(records, plan, folder.read_snapshot())
    state = with_recorded_decision(journalled, plan, folder)
    return RunView(folder=folder, spec=spec, plan=plan, state=state, journalled=journalled)
