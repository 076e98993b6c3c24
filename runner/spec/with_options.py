"""Check each phase's `with:` against its phase's pydantic model, located in the spec.

A built-in phase's model comes from the registry (`runner.phases.registry.options_model`, a
`module:Class` string imported lazily from a torch-free module); a user's phase declares one
as `fn.options = MyModel`. The check runs on `with:` after `${params...}` is resolved with
every `--set` applied, so a value is judged as the phase would get it. The validation context
lets the models check what only the spec knows: the spec's folder (few-shot and eval-set
files must exist and parse) and the phases before this one (`source` must name one of them).

A problem with a value that came from `${params.x}` is reported where that value was written:
at `params.x` in the file, or against the `--set` that gave it, naming the `with:` key it
reached. Unknown and missing keys stay at the `with:` mapping, where the fix is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from runner.errors import SpecProblem
from runner.phases.registry import BUILTIN_OPTIONS, OptionsError, options_model
from runner.spec.interpolate import Ref, TemplateError, parse_template, reference_problems, resolve_with
from runner.spec.params import SET_SOURCE, UnlocatedProblem
from runner.spec.problems import error_problem, merge_union_messages
from runner.spec.yaml_marks import KeyPath, Marks, dotted

__all__ = ["with_problems"]


def _references(raw: Any, path: KeyPath = ()) -> tuple[dict[KeyPath, str], dict[KeyPath, list[str]]]:
    """Where `raw` holds `${params...}`: values that are exactly one reference (path -> param
    path) and text with references inside (path -> param paths)."""
    exact: dict[KeyPath, str] = {}
    inside: dict[KeyPath, list[str]] = {}
    if isinstance(raw, str) and "${" in raw:
        try:
            pieces = parse_template(raw)
        except TemplateError:
            return exact, inside
        refs = [p.path for p in pieces if isinstance(p, Ref)]
        if len(pieces) == 1 and refs:
            exact[path] = refs[0]
        elif refs:
            inside[path] = refs
    elif isinstance(raw, Mapping) or isinstance(raw, list):
        items = raw.items() if isinstance(raw, Mapping) else enumerate(raw)
        for key, value in items:
            sub_exact, sub_inside = _references(value, path + (key,))
            exact.update(sub_exact)
            inside.update(sub_inside)
    return exact, inside


def _has_bad_reference(raw: Any, params: Mapping[str, Any]) -> bool:
    if isinstance(raw, str):
        return bool(reference_problems(raw, params))
    if isinstance(raw, Mapping):
        return any(_has_bad_reference(v, params) for v in raw.values())
    if isinstance(raw, list):
        return any(_has_bad_reference(v, params) for v in raw)
    return False


def _data_loc(loc: tuple[Any, ...], data: Any, missing: bool) -> tuple[Any, ...]:
    """`loc` without pydantic's union-member tags (`bool`, `list[str]`): parts not in `data`."""
    out: list[Any] = []
    node = data
    for n, part in enumerate(loc):
        last = n == len(loc) - 1
        if part == "[key]":
            out.append(part)
            node = None
        elif isinstance(node, Mapping) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif last and missing:
            out.append(part)
    return tuple(out)


def _origin(with_loc: KeyPath, exact: dict[KeyPath, str]) -> str | None:
    """The parameter path a value at `with_loc` came from, if it came from `${params...}`."""
    for end in range(len(with_loc), -1, -1):
        if with_loc[:end] in exact:
            rest = with_loc[end:]
            cut = next((k for k, p in enumerate(rest) if not isinstance(p, str)), len(rest))
            return ".".join([exact[with_loc[:end]], *rest[:cut]])
    return None


def _set_key(param: str, overrides: Mapping[str, Any]) -> str | None:
    return next((k for k in overrides if param == k or param.startswith(k + ".")), None)


def _locate(errs: list[dict[str, Any]], model: type[BaseModel], marks: Marks, file: str,
            prefix: KeyPath, with_loc: KeyPath, exact: dict[KeyPath, str],
            inside: dict[KeyPath, list[str]], overrides: Mapping[str, Any]) -> SpecProblem:
    first = dict(errs[0], loc=with_loc)
    problem = error_problem(first, model, marks, file, prefix)
    message = merge_union_messages([error_problem(dict(e, loc=with_loc), model, marks, file, prefix).message
                            for e in errs])
    if first["type"] in ("extra_forbidden", "missing") or "[key]" in with_loc:
        return SpecProblem(problem.file, problem.line, problem.col, problem.path, message)
    used_by = dotted(prefix + with_loc)
    param = _origin(with_loc, exact)
    if param is not None:
        key = _set_key(param, overrides)
        if key is not None:
            return UnlocatedProblem(SET_SOURCE, 0, 0, key, f"{message}; it reaches {used_by}")
        line, col = marks.value(("params", *param.split(".")))
        return SpecProblem(file, line, col, f"params.{param}", f"{message}; used by {used_by}")
    from_set = [k for p in inside.get(with_loc, []) if (k := _set_key(p, overrides)) is not None]
    if from_set:
        message += f" (built from --set {', '.join(dict.fromkeys(from_set))})"
    return SpecProblem(problem.file, problem.line, problem.col, problem.path, message)


def with_problems(data: Mapping[str, Any], marks: Marks, file: str, spec_dir: Path,
                  params: Mapping[str, Any] | None, overrides: Mapping[str, Any],
                  check_uses: bool = True) -> list[SpecProblem]:
    """Every problem of every phase's `with:` under its model (empty when all are fine).

    `params` are the effective parameters (None when `params` is not a mapping: skipped);
    `overrides` the `--set` values, to name the one a bad value came from. User phases are
    imported only with `check_uses`. What other checks report (a bad `uses`, a `${...}` to
    nothing, a `with:` that is not a mapping) is skipped here rather than reported twice.
    """
    entries = data.get("phases")
    if not isinstance(entries, list) or params is None:
        return []
    names = [(e.get("gate") if "gate" in e else e.get("name"), "gate" in e) if isinstance(e, Mapping) else (None, False)
             for e in entries]
    phases = [n for n, is_gate in names if isinstance(n, str) and not is_gate]
    gates = [n for n, is_gate in names if isinstance(n, str) and is_gate]
    problems: list[SpecProblem] = []
    for i, e in enumerate(entries):
        uses = e.get("uses") if isinstance(e, Mapping) and "gate" not in e else None
        raw = e.get("with", {}) if isinstance(e, Mapping) else None
        if not isinstance(uses, str) or not isinstance(raw, Mapping) or _has_bad_reference(raw, params):
            continue
        if not check_uses and uses not in BUILTIN_OPTIONS:
            continue
        try:
            model = options_model(uses, spec_dir)
        except OptionsError as exc:
            line, col = marks.value(("phases", i, "uses"))
            problems.append(SpecProblem(file, line, col, f"phases[{i}].uses", str(exc)))
            continue
        except Exception:  # a `uses` that does not resolve: reported by semantics
            continue
        if model is None:
            continue
        inputs = e.get("inputs")
        context = {
            "spec_dir": spec_dir,
            "phases_before": [n for n, is_gate in names[:i] if isinstance(n, str) and not is_gate],
            "inputs": [x for x in inputs if isinstance(x, str)] if isinstance(inputs, list) else None,
            "phases": phases,
            "gates": gates,
        }
        resolved = resolve_with(dict(raw), params)
        try:
            model.model_validate(resolved, context=context)
        except ValidationError as exc:
            grouped: dict[KeyPath, list[dict[str, Any]]] = {}
            for err in exc.errors(include_url=False):
                loc = _data_loc(tuple(err["loc"]), resolved, err["type"] == "missing")
                grouped.setdefault(loc, []).append(dict(err))
            exact, inside = _references(raw)
            for loc, errs in grouped.items():
                problems.append(_locate(errs, model, marks, file, ("phases", i, "with"), loc,
                                        exact, inside, overrides))
    return problems
