"""`resume --spec` and `plan --run --spec`: what replacing a run's frozen spec would change.

`prepare_amend` decides everything before anything is written: every refusal of the contract
(another `name`, a completed or aborted run, a decided gate gone, an invalid spec), the new
effective parameters, and which phases of the current iteration have another fingerprint under
the new spec. The engine then journals one `SpecAmended` event (`RunEngine.amend`), and
`describe_amend` says the same in words for `plan --run --spec`.

Parameters under the new spec: its `params`, the run's earlier `--set` values that still name a
parameter, this amend's `--set`, then the values of the ITERATE decisions already applied (the
reviewers' choices stay in force unless this amend's `--set` names the same path).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runner.engine.planning import changed_keys, fingerprint_of, phase_payload
from runner.engine.runview import plan_of
from runner.errors import Refused
from runner.machine import (
    GateStep,
    PhaseStep,
    Plan,
    Resumed,
    RunState,
    RunStatus,
    SpecAmended,
    apply,
    decided_gates_after,
    iteration_begin,
    restart_index,
)
from runner.spec import ResolvedSpec, has_path, load_spec, parse_set_args, set_path
from runner.store.atomic import dumps_json
from runner.store.run_folder import RunFolder

__all__ = ["AMENDABLE", "AmendChange", "describe_amend", "prepare_amend"]

AMENDABLE = (RunStatus.FAILED, RunStatus.RUNNING, RunStatus.READY, RunStatus.AWAITING_DECISION)
_DONE = ("succeeded", "reused")


@dataclass(frozen=True)
class AmendChange:
    """An accepted amend, not yet written: the new spec and the event that puts it in force."""

    old: ResolvedSpec
    new: ResolvedSpec
    new_plan: Plan
    frozen_bytes: bytes  # the new frozen spec, stored under its sha256
    state: RunState  # the state the event applies to (a pending decision applied first)
    apply_decision_first: bool
    params: dict[str, Any]
    changed: list[str]
    restart: int
    reasons: dict[str, list[str]] = field(default_factory=dict)  # phase -> changed keys
    dropped_sets: list[str] = field(default_factory=list)

    def event(self, frozen: str, at: str) -> SpecAmended:
        """The journal event that puts the frozen spec `frozen` in force."""
        return SpecAmended(frozen=frozen, old_sha256=self.old.sha256, new_sha256=self.new.sha256,
                           params=self.params, changed=self.changed, at=at)


def _yaml_value(value: Any) -> str:
    # safe_dump writes floats so that YAML reads them back as floats (1.0e-05, not 1e-05).
    return str(yaml.safe_dump(value, default_flow_style=True, width=1 << 30)).strip().removesuffix("...").strip()


def _load_new(path: str, sets: Sequence[str], old: ResolvedSpec) -> tuple[ResolvedSpec, list[str]]:
    """The new spec with the run's earlier `--set` values (those it still has parameters for)
    and this amend's; returns it and the earlier values dropped."""
    given = parse_set_args(sets)
    peek = load_spec(path, sets)  # every problem of the file and of this amend's --set, at once
    carried, dropped = [], []
    for key, value in old.overrides.items():
        if key in given:
            continue
        if has_path(peek.spec.params, key):
            carried.append(f"{key}={_yaml_value(value)}")
        else:
            dropped.append(key)
    return (load_spec(path, [*carried, *sets]) if carried else peek), dropped


def _params(new: ResolvedSpec, state: RunState, given: set[str]) -> dict[str, Any]:
    params = new.params
    for d in state.decisions:
        if d.decision != "iterate" or d.iteration >= state.iteration:
            continue  # only decisions already applied (an iterate starts the next iteration)
        for path, value in d.set.items():
            if path in given:
                continue
            if not has_path(params, path):
                raise Refused(f"the ITERATE decision at gate '{d.gate}' (iteration {d.iteration}) set "
                              f"'{path}', which {new.source_path} has no parameter for; keep that "
                              "parameter in the spec")
            params = set_path(params, path, value)
    return params


def _records(folder: RunFolder, state: RunState, name: str) -> Path | None:
    inst = state.latest_instance(name)
    if inst is None:
        return None
    return folder.phase_dir(name, inst.reused_from or inst.iteration) / "records.jsonl"


def _old_payload(folder: RunFolder, name: str, state: RunState) -> dict[str, Any] | None:
    inst = state.instance(name, state.iteration)
    if inst is None:
        return None
    path = folder.phase_dir(name, inst.reused_from or inst.iteration) / "fingerprint.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def prepare_amend(folder: RunFolder, state: RunState, old: ResolvedSpec, old_plan: Plan,
                  spec_path: str, sets: Sequence[str]) -> AmendChange:
    """Check an amend of the run in `state` (decisions recorded but not journalled folded in)
    to the spec at `spec_path` with `sets`; raise `Refused`/`SpecError` (exit 2) or return it."""
    run = state.run_id
    if state.status not in AMENDABLE:
        raise Refused(f"run '{run}' is {state.status.value}: only a failed, interrupted, ready or "
                      f"awaiting_decision run can be amended; start a new run with `runner run {spec_path}`")
    new, dropped = _load_new(spec_path, sets, old)
    if new.spec.name != old.spec.name:
        raise Refused(f"{spec_path}: name '{new.spec.name}' is not the run's name '{old.spec.name}'; "
                      "an amend keeps the run's name (start a new run for another spec)")
    new_plan = plan_of(new)
    decided_now = [d.gate for d in state.decisions if d.iteration == state.iteration]
    gone = [g for g in decided_now if new_plan.gate(g) is None]
    if gone:
        raise Refused(f"{spec_path}: gate '{gone[0]}' has a decision in iteration {state.iteration} but the "
                      "new spec has no gate of that name; keep it (its name too) in the spec")
    first = state.status == RunStatus.READY
    sim = apply(state, Resumed(at="amend"), old_plan) if first else state
    params = _params(new, sim, set(parse_set_args(sets)))
    probe = sim.model_copy(update={"params": params})
    if iteration_begin(sim, new_plan) is None:
        raise Refused(f"{spec_path}: none of the phases of iteration {sim.iteration} is in the new spec; "
                      "start a new run instead")
    changed, reasons = [], {}
    for step in new_plan.steps:
        inst = sim.instance(step.name, sim.iteration) if isinstance(step, PhaseStep) else None
        if inst is None or inst.status not in _DONE:
            continue
        payload = phase_payload(new, new_plan, probe, step.name, lambda n: _records(folder, probe, n))
        if fingerprint_of(payload) != inst.fingerprint:
            changed.append(step.name)
            reasons[step.name] = changed_keys(_old_payload(folder, step.name, sim), payload)
    restart = restart_index(sim, new_plan, changed)
    decided = decided_gates_after(sim, new_plan, restart)
    if decided:
        at = new_plan.steps[restart].name
        raise Refused(f"{spec_path}: phase '{at}' would run again, but gate '{decided[0]}' after it was "
                      f"decided in iteration {sim.iteration} on the results as they are; results no "
                      "reviewer saw would pass it. Amend only steps after that gate, or start a new run")
    return AmendChange(old=old, new=new, new_plan=new_plan, frozen_bytes=dumps_json(new.to_frozen()),
                       state=sim, apply_decision_first=first, params=params, changed=changed,
                       restart=restart, reasons=reasons, dropped_sets=dropped)


def describe_amend(change: AmendChange) -> list[str]:
    """Lines saying what the amend keeps and re-runs in the current iteration, and why."""
    state, plan = change.state, change.new_plan
    lines = [f"amend run {state.run_id}: spec sha256 {change.old.sha256[:12]} -> {change.new.sha256[:12]} "
             f"({change.new.source_path})"]
    if change.apply_decision_first:
        lines.append("the recorded decision is applied first (as `runner resume` would)")
    if change.dropped_sets:
        lines.append("dropped earlier --set (the new spec has no such parameter): " + ", ".join(change.dropped_sets))
    diff = changed_keys(state.params, change.params) if state.params != change.params else []
    lines.append("parameters: " + (", ".join(diff) + " changed" if diff else "unchanged"))
    lines.append(f"iteration {state.iteration}:")
    begin = iteration_begin(state, plan) or 0
    for i, step in enumerate(plan.steps[begin:], start=begin):
        if isinstance(step, GateStep):
            d = state.decision_on(step.name, state.iteration)
            if i < change.restart and d is not None:
                lines.append(f"  keep  gate {step.name}: decided ({d.decision} by {d.reviewer})")
            else:
                lines.append(f"  stop  gate {step.name}: reached again, checks and packet made anew")
                break
            continue
        inst = state.instance(step.name, state.iteration)
        if i < change.restart:
            lines.append(f"  keep  {step.name}: fingerprint unchanged, results kept")
        elif step.name in change.changed:
            lines.append(f"  run   {step.name}: changed: {', '.join(change.reasons.get(step.name) or ['?'])}")
        elif inst is None:
            lines.append(f"  run   {step.name}: new in this spec")
        elif inst.status in _DONE:
            lines.append(f"  run   {step.name}: after a changed step")
        else:
            lines.append(f"  run   {step.name}: not done yet ({inst.status.value})")
    else:
        lines.append("  then the run completes")
    return lines
