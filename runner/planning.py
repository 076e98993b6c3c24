"""What a phase instance would compute, and whether an earlier instance already did.

Shared by the engine (to decide run-or-reuse) and by `runner plan --run` (to show, before
resuming, what will run and which key changed). Pure apart from hashing the phase's source.
"""

from __future__ import annotations

import hashlib
from typing import Any

from runner.fingerprint import canonical_json, source_hash
from runner.gates import flatten
from runner.machine import GateStep, PhaseInstance, Plan, RunState
from runner.spec import ResolvedSpec
from runner.store.batches import derive_seed

__all__ = ["changed_keys", "find_reusable", "fingerprint_of", "inputs_of", "phase_payload"]


def inputs_of(spec: ResolvedSpec, plan: Plan, name: str) -> list[str]:
    """The phases `name` reads: its declared `inputs`, else every phase before it."""
    declared = spec.phase(name).inputs
    if declared is not None:
        return list(declared)
    names = [s.name for s in plan.steps if not isinstance(s, GateStep)]
    return names[: names.index(name)]


def phase_payload(spec: ResolvedSpec, plan: Plan, state: RunState, name: str) -> dict[str, Any]:
    """Everything that determines the phase's output, as one JSON-able mapping."""
    phase, params = spec.phase(name), state.params
    inputs = {}
    for n in inputs_of(spec, plan, name):
        inst = state.latest_instance(n)
        inputs[n] = inst.fingerprint if inst is not None else None
    return {
        "uses": phase.uses,
        "run": spec.resolved_run(name, params),
        "with": spec.resolved_with(name, params),
        "env": spec.resolved_env(name, params),
        "model": spec.resolved_model(name, params),
        "inputs": inputs,
        "seed": derive_seed(spec.spec.seed, name),
        "source": source_hash(phase.uses, spec.spec_dir),
    }


def fingerprint_of(payload: dict[str, Any]) -> str:
    """sha256 of the payload's canonical JSON."""
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def find_reusable(state: RunState, name: str, fingerprint: str) -> PhaseInstance | None:
    """An instance of `name` that succeeded earlier in this run with the same fingerprint."""
    return next(
        (p for p in state.phases if p.name == name and p.status == "succeeded" and p.fingerprint == fingerprint),
        None,
    )


def changed_keys(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """Dotted keys whose value differs between two payloads (`with.temperature`, `inputs.x`)."""
    if before is None:
        return ["(no earlier instance)"]
    old, new = flatten(before), flatten(after)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
