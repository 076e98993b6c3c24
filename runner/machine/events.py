"""The events `apply` accepts, one pydantic model each, told apart by `kind`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from runner.machine.state import CheckOutcome, DecisionRecord, FrozenModel


class RunStarted(FrozenModel):
    kind: Literal["run_started"] = "run_started"
    run_id: str
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    frozen_sha256: str | None = None  # of spec.json's bytes, so `runner verify` can check it


class PhaseStarted(FrozenModel):
    kind: Literal["phase_started"] = "phase_started"
    name: str
    fingerprint: str | None = None
    at: str


class PhaseSucceeded(FrozenModel):
    kind: Literal["phase_succeeded"] = "phase_succeeded"
    name: str
    metrics: dict[str, float] = Field(default_factory=dict)
    wall_s: float = 0.0
    used_cuda: bool = False
    at: str


class PhaseReused(FrozenModel):
    kind: Literal["phase_reused"] = "phase_reused"
    name: str
    fingerprint: str | None = None
    source_iteration: int
    metrics: dict[str, float] = Field(default_factory=dict)
    at: str


class PhaseFailed(FrozenModel):
    kind: Literal["phase_failed"] = "phase_failed"
    name: str
    error: str
    wall_s: float = 0.0
    used_cuda: bool = False
    at: str


class GateReached(FrozenModel):
    kind: Literal["gate_reached"] = "gate_reached"
    gate: str
    checks: list[CheckOutcome] = Field(default_factory=list)
    packet_sha256: str | None = None
    at: str


class DecisionRecorded(FrozenModel):
    kind: Literal["decision_recorded"] = "decision_recorded"
    decision: DecisionRecord


class Resumed(FrozenModel):
    kind: Literal["resumed"] = "resumed"
    at: str


class RunCompleted(FrozenModel):
    kind: Literal["run_completed"] = "run_completed"
    at: str


class BudgetExhausted(FrozenModel):
    kind: Literal["budget_exhausted"] = "budget_exhausted"
    reason: str
    at: str


class SpecAmended(FrozenModel):
    """`resume --spec`: the frozen spec `frozen` (a content hash) is in force from here on.

    `apply` takes the NEW spec's plan with this event. `changed` names the phases of the
    current iteration whose fingerprint differs under the new spec; `params` are the run's
    effective parameters under it (the new spec's, the amend's `--set`, then the ITERATE
    decisions' values again)."""

    kind: Literal["spec_amended"] = "spec_amended"
    frozen: str
    old_sha256: str
    new_sha256: str
    params: dict[str, Any] = Field(default_factory=dict)
    changed: list[str] = Field(default_factory=list)
    at: str


Event = Annotated[
    RunStarted | PhaseStarted | PhaseSucceeded | PhaseReused | PhaseFailed | GateReached
    | DecisionRecorded | Resumed | RunCompleted | BudgetExhausted | SpecAmended,
    Field(discriminator="kind"),
]
_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


def parse_event(data: dict[str, Any]) -> Event:
    """The event a JSON object describes (pydantic ValidationError if it describes none)."""
    return _EVENT_ADAPTER.validate_python(data)


