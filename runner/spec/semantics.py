"""Checks that relate one part of a spec to another, on the raw (possibly ill-shaped) data.

pydantic stops at the first shape error of a phase, yet a user fixing a spec wants every
problem at once: so these checks read the raw YAML data, skip what has the wrong type (pydantic
reports that), and run whether or not the models validated. Each problem says what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import SpecProblem
from runner.phases.registry import BUILTIN_PHASES, UsesError, resolve_uses
from runner.spec.interpolate import reference_problems
from runner.spec.models import parse_check
from runner.spec.params import (
    declared_types,
    did_you_mean,
    get_path,
    has_path,
    type_of,
    type_problems,
    unknown_param_message,
)
from runner.spec.problems import non_text_key_message
from runner.spec.yaml_marks import KeyPath, Marks, dotted

__all__ = ["check_semantics", "key_problems"]


@dataclass
class _Checker:
    file: str
    marks: Marks
    problems: list[SpecProblem] = field(default_factory=list)

    def at_value(self, path: KeyPath, message: str) -> None:
        line, col = self.marks.value(path)
        self.problems.append(SpecProblem(self.file, line, col, dotted(path), message))

    def at_key(self, path: KeyPath, message: str) -> None:
        line, col = self.marks.key(path)
        self.problems.append(SpecProblem(self.file, line, col, dotted(path), message))


def key_problems(data: Any, marks: Marks, file: str) -> list[SpecProblem]:
    """Every mapping key must be text (the spec is frozen as JSON); param keys may not hold '.'.

    pydantic would report a non-text key only where its model types the keys; this walk covers
    the free mappings (`params`, `with`) too, once, at the key itself.
    """
    checker = _Checker(file, marks)

    def walk(node: Any, path: KeyPath, in_params: bool) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if not isinstance(key, str):
                    checker.at_key(path + (key,), non_text_key_message(key))
                elif in_params and "." in key:
                    checker.at_key(path + (key,), f"parameter name '{key}' may not contain '.' "
                                   "(dots separate the levels of a path); nest it instead")
                walk(value, path + (key,), in_params or path + (key,) == ("params",))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, path + (i,), in_params)

    walk(data, (), False)
    return checker.problems


def _phase_ref(name: str, earlier: list[str], phases: set[str], gates: set[str], before: str) -> str | None:
    """Why `name` is not a phase that runs before `before`, or None when it is."""
    if name in earlier:
        return None
    if name in gates:
        return f"'{name}' is a gate, not a phase; name a phase that runs before {before}"
    if name in phases:
        return f"phase '{name}' does not run before {before}; name an earlier phase or move it"
    hint = did_you_mean(name, earlier)
    if not hint:
        hint = f"; phases before {before}: {', '.join(earlier) or 'none'}"
    return f"no phase named '{name}'{hint}"


def check_semantics(
    data: Mapping[str, Any],
    marks: Marks,
    file: str,
    spec_dir: Path,
    spec_params: Mapping[str, Any] | None,
    effective_params: Mapping[str, Any] | None,
    check_uses: bool = True,
) -> list[SpecProblem]:
    """Problems of names, references and `${...}` across the spec (empty when there are none).

    `spec_params` is the file's `params` (what `may_set` is checked against); references are
    checked against `effective_params` (after `--set`). Either is None when `params` is not a
    mapping, and then the checks that need it are skipped rather than failing everywhere.
    """
    c = _Checker(file, marks)
    entries = data.get("phases")
    if not isinstance(entries, list):
        return key_problems(data, marks, file)
    # A non-mapping entry is pydantic's to report; here it only keeps the indices right.
    entries = [e if isinstance(e, Mapping) else None for e in entries]
    # First pass: every name and where it first appears, for clashes and "not before" messages.
    phases: dict[str, int] = {}
    gates: dict[str, int] = {}
    for i, e in enumerate(entries):
        if e is None:
            continue
        is_gate = "gate" in e
        name = e.get("gate") if is_gate else e.get("name")
        key = "gate" if is_gate else "name"
        if not isinstance(name, str):
            continue
        if name in phases or name in gates:
            first = phases.get(name, gates.get(name))
            first_kind = "phase" if name in phases else "gate"
            line = marks.value(("phases", first, "gate" if first_kind == "gate" else "name"))[0]
            kind = "gate" if is_gate else "phase"
            what = f"duplicate {kind} name '{name}'" if kind == first_kind else \
                f"{kind} '{name}' has the same name as the {first_kind}"
            c.at_value(("phases", i, key), f"{what} at line {line}; names must be unique, rename one")
            continue
        (gates if is_gate else phases)[name] = i
    for i, e in enumerate(entries):
        if e is None:
            continue
        here: KeyPath = ("phases", i)
        earlier = [n for n, j in phases.items() if j < i]
        if "gate" in e:
            before = f"gate '{e['gate']}'" if isinstance(e["gate"], str) else "this gate"
            _gate(c, here, e, earlier, set(phases), set(gates), before, spec_params)
        else:
            name = e.get("name")
            this = f"phase '{name}'" if isinstance(name, str) else "this phase"
            _phase(c, here, e, earlier, set(phases), set(gates), this, spec_dir, check_uses)
            if effective_params is not None:
                for key in ("with", "run", "env", "model"):
                    if key in e:
                        _scan_refs(c, here + (key,), e[key], effective_params)
    if effective_params is not None and isinstance(data.get("model"), Mapping):
        _scan_refs(c, ("model",), data["model"], effective_params)
    if spec_params is not None and isinstance(data.get("param_types"), Mapping):
        _param_types(c, data["param_types"], spec_params)
    return c.problems + key_problems(data, marks, file)


def _param_types(c: _Checker, types: Mapping[str, Any], spec_params: Mapping[str, Any]) -> None:
    """Each `param_types` path names a parameter whose own value is of a declared type."""
    declared = declared_types({k: v for k, v in types.items() if isinstance(v, (str, list))})
    for path in types:
        if not isinstance(path, str):
            continue
        if not has_path(spec_params, path):
            c.at_key(("param_types", path), f"'{path}': {unknown_param_message(spec_params, path)}")
        elif path in declared:
            for message in type_problems(path, None, get_path(spec_params, path), declared):
                c.at_value(("params", *path.split(".")), f"{message}; change the value or its param_types")


def _phase(c: _Checker, here: KeyPath, e: Mapping[str, Any], earlier: list[str],
           phases: set[str], gates: set[str], this: str, spec_dir: Path, check_uses: bool) -> None:
    if "with_" in e:
        c.at_key(here + ("with_",), "unknown key 'with_'; did you mean 'with'?")
    has_uses, has_run = e.get("uses") is not None, e.get("run") is not None
    if has_uses and has_run:
        later = max(("uses", "run"), key=lambda k: c.marks.key(here + (k,)))
        c.at_key(here + (later,), f"{this} has both 'uses' and 'run'; keep one: 'uses' for a "
                 "Python function (module:function), 'run' for a shell command")
    if has_run and e.get("shards") is not None:
        c.at_key(here + ("shards",), f"{this} is a shell phase; 'shards' needs a Python phase "
                 "('uses'), whose ctx.shard_items() splits the work")
    if not has_uses and not has_run:
        c.at_value(here, f"{this} has neither 'uses' (a Python function, module:function) nor "
                   "'run' (a shell command); add one")
    uses = e.get("uses")
    # A built-in is not imported here: its module loads torch, and its `with:` model (checked
    # by `with_options`) is what a spec can get wrong about it.
    if isinstance(uses, str) and check_uses and uses not in BUILTIN_PHASES:
        try:
            resolve_uses(uses, spec_dir)
        except UsesError as exc:
            c.at_value(here + ("uses",), str(exc))
        except Exception as exc:  # a module that misbehaves beyond what the registry catches
            c.at_value(here + ("uses",), f"resolving '{uses}' raised {type(exc).__name__}: {exc}")
    run = e.get("run")
    if isinstance(run, str) and not run.strip():
        c.at_value(here + ("run",), "'run' is empty; give the shell command to run")
    inputs = e.get("inputs")
    if isinstance(inputs, list):
        for j, name in enumerate(inputs):
            if isinstance(name, str):
                why = _phase_ref(name, earlier, phases, gates, this)
                if why:
                    c.at_value(here + ("inputs", j), why)


def _gate(c: _Checker, here: KeyPath, e: Mapping[str, Any], earlier: list[str],
          phases: set[str], gates: set[str], before: str, spec_params: Mapping[str, Any] | None) -> None:
    checks = e.get("checks")
    if isinstance(checks, list):
        for j, expr in enumerate(checks):
            if not isinstance(expr, str):
                continue
            try:
                check = parse_check(expr)
            except ValueError as exc:
                c.at_value(here + ("checks", j), str(exc))
                continue
            why = _phase_ref(check.phase, earlier, phases, gates, before)
            if why:
                c.at_value(here + ("checks", j), f"check '{check.expr}': {why}")
    start = e.get("iterate_from")
    if isinstance(start, str):
        why = _phase_ref(start, earlier, phases, gates, before)
        if why:
            c.at_value(here + ("iterate_from",), why)
    may_set = e.get("may_set")
    if isinstance(may_set, list) and spec_params is not None:
        for j, path in enumerate(may_set):
            if isinstance(path, str) and not has_path(spec_params, path):
                c.at_value(here + ("may_set", j), f"'{path}': {unknown_param_message(spec_params, path)}")
    if isinstance(may_set, Mapping) and spec_params is not None:
        for path, bounds in may_set.items():
            if isinstance(path, str):
                _bounds(c, here + ("may_set", path), path, bounds, spec_params)


def _bounds(c: _Checker, where: KeyPath, path: str, bounds: Any, spec_params: Mapping[str, Any]) -> None:
    """A `may_set` path must exist; `min`/`max` need a number, bounds a single parameter."""
    if not has_path(spec_params, path):
        c.at_key(where, f"'{path}': {unknown_param_message(spec_params, path)}")
        return
    if not isinstance(bounds, Mapping) or not bounds:
        return  # `{}`, or a shape pydantic reports
    current = get_path(spec_params, path)
    if isinstance(current, Mapping):
        c.at_key(where, f"'{path}' is a group of parameters: bound its keys one by one "
                 f"(e.g. '{path}.x: {{min: ...}}'), or give it {{}}")
        return
    for key in ("min", "max"):
        if key in bounds and type_of(current) not in ("integer", "number", "null"):
            c.at_value(where + (key,), f"'{key}' bounds a number, but '{path}' is "
                       f"{type_of(current)} in params; use choices")


def _scan_refs(c: _Checker, path: KeyPath, value: Any, params: Mapping[str, Any]) -> None:
    if isinstance(value, str):
        for message in reference_problems(value, params):
            c.at_value(path, message)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _scan_refs(c, path + (key,), item, params)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _scan_refs(c, path + (i,), item, params)
