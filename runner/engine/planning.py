"""What a phase instance would compute, and whether an earlier instance already did.

Shared by the engine (to decide run-or-reuse) and by `runner plan --run` (to show, before
resuming, what will run and which key changed). Pure apart from hashing the phase's source.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from runner.engine.fingerprint import canonical_json, source_hash
from runner.machine import GateStep, PhaseInstance, Plan, RunState
from runner.review.gates import flatten
from runner.spec import ResolvedSpec
from runner.store.batches import derive_seed

__all__ = ["changed_keys", "find_reusable", "fingerprint_of", "inputs_of", "phase_payload", "records_hash"]


def inputs_of(spec: ResolvedSpec, plan: Plan, name: str) -> list[str]:
    """The phases `name` reads: its declared `inputs`, else every phase before it."""
    declared = spec.phase(name).inputs
    if declared is not None:
        return list(declared)
    names = [s.name for s in plan.steps if not isinstance(s, GateStep)]
    return names[: names.index(name)]


def records_hash(path: Path) -> str | None:
    """sha256 of a records file's content, each record without its `provenance`.

    An input's records, not its fingerprint, are what a phase reads: a critic re-run with a
    new threshold that accepts the same records leaves the phases after it reusable. The
    provenance (iteration, parameters) differs between such runs and is left out.
    """
    try:
        stat = path.stat()
    except OSError:
        return None
    return _records_hash(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=128)
def _records_hash(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                if isinstance(record, dict):
                    record.pop("provenance", None)
                digest.update(canonical_json(record) + b"\n")
    return digest.hexdigest()


def phase_payload(spec: ResolvedSpec, plan: Plan, state: RunState, name: str,
                  input_records: Callable[[str], Path | None] | None = None) -> dict[str, Any]:
    """Everything that determines the phase's output, as one JSON-able mapping.

    `input_records(name)` gives the records file of an input's latest instance; its content
    hash stands for that input. Without it (or before that input wrote records) the input's
    fingerprint stands for it.
    """
    phase, params = spec.phase(name), state.params
    inputs: dict[str, str | None] = {}
    for n in inputs_of(spec, plan, name):
        inst = state.latest_instance(n)
        path = input_records(n) if input_records is not None and inst is not None else None
        content = records_hash(path) if path is not None else None
        inputs[n] = f"records:{content}" if content else (inst.fingerprint if inst is not None else None)
    return {
        "uses": phase.uses,
        "run": spec.resolved_run(name, params),
        "with": spec.resolved_with(name, params),
        "env": spec.resolved_env(name, params),
        "model": spec.resolved_model(name, params),
        "inputs": inputs,
        "seed": derive_seed(spec.spec.seed, name),
        "shards": phase.shards.count if phase.shards is not None else None,  # shards seed apart
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
