"""`runner plan --run RUN_ID`: what `resume` would do next, without doing it.

The answer comes from simulating the resume on the pure machine: the pending decision (or crash
recovery) is applied, then each phase up to the next gate is either reused (an earlier instance
has its fingerprint) or run, and for a run we name the keys of its fingerprint that changed
since its latest instance (`with.temperature`, `inputs.generate_instructions`, ...).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from runner.engine.planning import changed_keys, find_reusable, fingerprint_of, phase_payload
from runner.engine.runview import RunView
from runner.machine import (
    GateStep,
    PhaseReused,
    PhaseStarted,
    PhaseSucceeded,
    Resumed,
    RunState,
    RunStatus,
    apply,
)

__all__ = ["describe_resume"]

_SIM_AT = "plan"  # simulated events need a time; it never reaches a journal


def _earlier_payload(view: RunView, state: RunState, name: str) -> dict[str, Any] | None:
    inst = state.latest_instance(name)
    if inst is None:
        return None
    path = view.folder.phase_dir(name, inst.reused_from or inst.iteration) / "fingerprint.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _records_path(view: RunView, state: RunState, name: str) -> Path | None:
    inst = state.latest_instance(name)
    if inst is None or inst.status not in ("succeeded", "reused"):
        return None  # a phase the simulation "ran" has no records yet: its fingerprint stands
    return view.folder.phase_dir(name, inst.reused_from or inst.iteration) / "records.jsonl"


def describe_resume(view: RunView) -> str:
    """Lines saying what `runner resume` would run, reuse, and where it would stop."""
    state, plan, spec = view.state, view.plan, view.spec
    lines = [f"run {state.run_id}: {view.status}, iteration {state.iteration}"]
    if state.status == RunStatus.COMPLETED:
        return "\n".join(lines + ["nothing to do: the run is completed"])
    if state.status == RunStatus.ABORTED:
        return "\n".join(lines + ["nothing to do: the run was aborted"])
    if state.status == RunStatus.AWAITING_DECISION:
        return "\n".join(lines + [f"waiting for a decision at gate '{state.pending_gate}': nothing runs until one is recorded"])
    if state.status == RunStatus.READY:
        decision = state.pending_decision()
        if decision is not None:
            lines.append(f"applies {decision.decision} at gate '{decision.gate}'"
                         + (f" with {json.dumps(decision.set)}" if decision.set else ""))
    sim = apply(state, Resumed(at=_SIM_AT), plan)
    if sim.iteration != state.iteration:
        lines.append(f"starts iteration {sim.iteration}")
    while sim.cursor < len(plan.steps):
        step = plan.steps[sim.cursor]
        if isinstance(step, GateStep):
            lines.append(f"  stop at gate {step.name} ({len(step.checks)} checks)")
            break
        payload = phase_payload(spec, plan, sim, step.name, functools.partial(_records_path, view, sim))
        fp = fingerprint_of(payload)
        earlier = find_reusable(sim, step.name, fp)
        if earlier is not None:
            lines.append(f"  reuse {step.name}: same fingerprint as iteration {earlier.iteration}")
            sim = apply(sim, PhaseReused(name=step.name, fingerprint=fp, source_iteration=earlier.iteration,
                                         metrics=earlier.metrics, at=_SIM_AT), plan)
            continue
        inst = sim.instance(step.name, sim.iteration)
        if inst is not None and inst.status in ("failed", "pending") and inst.attempts > 0:
            why = f"attempt {inst.attempts + 1} (committed batches are kept)"
        else:
            why = "changed: " + ", ".join(changed_keys(_earlier_payload(view, sim, step.name), payload))
        lines.append(f"  run   {step.name}: {why}")
        sim = apply(sim, PhaseStarted(name=step.name, fingerprint=fp, at=_SIM_AT), plan)
        sim = apply(sim, PhaseSucceeded(name=step.name, metrics={}, wall_s=0.0, used_cuda=False, at=_SIM_AT), plan)
    else:
        lines.append("  then the run completes")
    return "\n".join(lines)
