"""Run and phase-instance statuses and the state models (frozen pydantic, JSON round-trip)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class PhaseInstance(FrozenModel):
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


class DecisionSignature(FrozenModel):
    """A reviewer's signature of a decision: the signing key as an OpenSSH public-key line
    (`ssh-ed25519 AAAA...`) and the Ed25519 signature, base64 (see runner/review/signing.py)."""

    key: str
    sig: str


class DecisionRecord(FrozenModel):
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
    signature: DecisionSignature | None = None


class Amendment(FrozenModel):
    """One `resume --spec`: the spec files' sha256 before and after, and `frozen`, the
    content hash of the frozen spec put in force (the run folder keeps it under that name)."""

    at: str
    old_sha256: str
    new_sha256: str
    frozen: str


class CheckOutcome(FrozenModel):
    """One evaluated gate check; `value` is None when the metric is missing."""

    expr: str
    value: float | None = None
    passed: bool


class GateVisit(FrozenModel):
    """One arrival at a gate."""

    gate: str
    iteration: int
    checks: list[CheckOutcome] = Field(default_factory=list)
    packet_sha256: str | None = None
    at: str


class RunState(FrozenModel):
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
    frozen_spec: str | None = None  # the amended frozen spec in force; None: the one of `run`
    amendments: list[Amendment] = Field(default_factory=list)

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


