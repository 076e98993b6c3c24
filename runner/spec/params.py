"""Parameters addressed by dotted path, and `--set KEY=VALUE` overrides of them.

`params` is a free nested mapping; everything else (`--set`, `may_set`, `${params.x.y}`,
decisions) names a parameter by its dotted path, so the path helpers live here once. Lists are
leaves: a path never indexes into a list, which keeps `--set a.b=...` unambiguous.

`--set` may only change a parameter that exists: a typo must not quietly create a new one
that nothing reads. Its problems are not in the spec file, so they are reported against the
source `--set` with no line, which prints as `--set: key: message`.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from runner.errors import SpecError, SpecProblem
from runner.spec.yaml_marks import SpecLoader

__all__ = [
    "SET_SOURCE",
    "UnlocatedProblem",
    "apply_overrides",
    "collect_set_args",
    "declared_types",
    "did_you_mean",
    "get_path",
    "has_path",
    "override_problems",
    "param_paths",
    "parse_set_args",
    "set_path",
    "type_of",
    "type_problems",
    "unknown_param_message",
]

SET_SOURCE = "--set"


@dataclass(frozen=True)
class UnlocatedProblem(SpecProblem):
    """A problem with no place in a file (a `--set` argument): prints `SOURCE: path: message`."""

    def __str__(self) -> str:
        if self.line > 0:
            return super().__str__()
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}: {where}{self.message}"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`"; did you mean 'x'?"` for the closest candidate, or `""` when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def param_paths(params: Mapping[str, Any]) -> list[str]:
    """Every dotted path in `params`, parents before their children, in file order."""
    out: list[str] = []

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            out.append(path)
            if isinstance(value, Mapping):
                walk(value, path + ".")

    walk(params, "")
    return out


def _split(dotted: str) -> list[str]:
    parts = dotted.split(".") if isinstance(dotted, str) else []
    if not parts or any(not p for p in parts):
        raise KeyError(dotted)
    return parts


def get_path(params: Mapping[str, Any], dotted: str) -> Any:
    """The value at `dotted` (`response.temperature`); KeyError when there is none."""
    node: Any = params
    for part in _split(dotted):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def has_path(params: Mapping[str, Any], dotted: str) -> bool:
    """Whether `dotted` names a parameter (a leaf or a group) in `params`."""
    try:
        get_path(params, dotted)
    except KeyError:
        return False
    return True


def set_path(params: Mapping[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of `params` with `dotted` set to `value`; `params` itself is not changed.

    Every mapping on the way must exist (KeyError otherwise); the last key may be new.
    """
    parts = _split(dotted)
    result: dict[str, Any] = copy.deepcopy(dict(params))
    node: Any = result
    for part in parts[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            raise KeyError(dotted)
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)
    return result


def unknown_param_message(params: Mapping[str, Any], dotted: str) -> str:
    """`unknown parameter; did you mean 'x'?`, for a path that is not in `params`."""
    paths = param_paths(params)
    if dotted.startswith("params.") and dotted[len("params."):] in paths:
        hint = f"; did you mean '{dotted[len('params.'):]}'? (paths are relative to params)"
    else:
        hint = did_you_mean(dotted, paths)
    if not hint and paths:
        shown = ", ".join(paths[:8]) + (", ..." if len(paths) > 8 else "")
        hint = f"; known parameters: {shown}"
    elif not paths:
        hint = "; the spec has no params"
    return f"unknown parameter{hint}"


def _problem(path: str, message: str) -> UnlocatedProblem:
    return UnlocatedProblem(SET_SOURCE, 0, 0, path, message)


def collect_set_args(items: Iterable[str]) -> tuple[dict[str, Any], list[SpecProblem]]:
    """`parse_set_args`, but returning the problems instead of raising (for `load_spec`)."""
    values: dict[str, Any] = {}
    problems: list[SpecProblem] = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            problems.append(_problem("", f"'{item}' is not KEY=VALUE; write e.g. response.temperature=0.3"))
            continue
        if not key or any(not part for part in key.split(".")):
            problems.append(_problem(key, f"'{item}': KEY must be a dotted path such as response.temperature"))
            continue
        try:
            # The spec's own loader: safe, and it leaves dates as text like the spec does.
            value = yaml.load(text, Loader=SpecLoader)
        except yaml.YAMLError as exc:
            why = getattr(exc, "problem", None) or str(exc)
            problems.append(_problem(key, f"value '{text}' is not valid YAML ({why}); quote it"))
            continue
        if not isinstance(value, (str, int, float, bool, type(None), list, dict)):
            problems.append(_problem(key, f"value '{text}' is not supported; quote it to pass text"))
            continue
        values[key] = value  # a repeated KEY: the last one wins, as on most command lines
    return values, problems


def parse_set_args(items: Iterable[str]) -> dict[str, Any]:
    """`["a.b=0.3", "c=[1,2]"]` -> `{"a.b": 0.3, "c": [1, 2]}`; VALUE is YAML.

    Raises `SpecError` listing every malformed item (no `=`, empty KEY, bad YAML).
    """
    values, problems = collect_set_args(items)
    if problems:
        raise SpecError(problems)
    return values


def type_of(value: Any) -> str:
    """The `param_types` name of a YAML value: integer, number, string, boolean, list, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "mapping" if isinstance(value, Mapping) else "other"


def _fits(kind: str, allowed: Iterable[str]) -> bool:
    return any(a == "any" or a == kind or (a == "number" and kind == "integer") for a in allowed)


_A = {"integer": "a whole number", "number": "a number", "string": "text", "boolean": "true or false",
      "list": "a list", "mapping": "a mapping", "null": "null"}


def _got(value: Any) -> str:
    kind = type_of(value)
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "string":
        return f"text {value!r}"
    if kind in ("list", "mapping"):
        return _A[kind]
    return repr(value)


def declared_types(param_types: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """`param_types` of a spec as path -> allowed type names (a single name or a list)."""
    out: dict[str, tuple[str, ...]] = {}
    for path, kinds in (param_types or {}).items():
        out[str(path)] = tuple(kinds) if isinstance(kinds, list) else (str(kinds),)
    return out


def type_problems(path: str, current: Any, value: Any,
                  declared: Mapping[str, tuple[str, ...]] | None = None) -> list[str]:
    """Why `value` may not replace the parameter `path` (now `current`); empty when it may.

    A value keeps the parameter's type: a whole number stays one (a number may be given as
    a whole number), text stays text, a list a list, a mapping a mapping (its keys must exist,
    each checked alike); true/false is not a number. A parameter that is null takes anything.
    `declared` (the spec's `param_types`) widens or narrows what a path takes. Pure.
    """
    kind = type_of(value)
    allowed = (declared or {}).get(path)
    if allowed is not None:
        if _fits(kind, allowed):
            return []
        wanted = " or ".join(_A.get(a, a) for a in allowed)
        return [f"'{path}' takes {wanted} (param_types); got {_got(value)}"]
    if current is None:
        return []
    have = type_of(current)
    if have == "mapping" and kind == "mapping":
        out: list[str] = []
        for key, sub in value.items():
            child = f"{path}.{key}"
            if key not in current:
                out.append(f"'{child}': unknown parameter{did_you_mean(str(key), list(current))}")
            else:
                out += type_problems(child, current[key], sub, declared)
        return out
    if have == kind or (have == "number" and kind == "integer"):
        return []
    return [f"'{path}' is {_A.get(have, have)} in the spec; got {_got(value)}: a value keeps its "
            "parameter's type (declare other types in the spec's param_types)"]


def override_problems(params: Mapping[str, Any], overrides: Mapping[str, Any],
                      declared: Mapping[str, tuple[str, ...]] | None = None) -> list[SpecProblem]:
    """What is wrong with applying `overrides` to `params` (empty when nothing is)."""
    problems: list[SpecProblem] = []
    for key, value in overrides.items():
        if not has_path(params, key):
            problems.append(_problem(key, unknown_param_message(params, key)))
            continue
        current = get_path(params, key)
        if isinstance(current, Mapping) and not isinstance(value, Mapping) and key not in (declared or {}):
            # `--set response=0.3` would wipe out a whole group that `${...}` refers into.
            children = param_paths(current)
            example = f"{key}.{children[0]}" if children else key
            problems.append(_problem(
                key, f"is a group of parameters; set one of its keys (e.g. '{example}=...') "
                "or give a mapping",
            ))
            continue
        problems += [_problem(key, message) for message in type_problems(key, current, value, declared)]
    return problems


def apply_overrides(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `params` with each dotted-path override applied; `params` is not changed.

    Raises `SpecError` naming every unknown key (with did-you-mean) at once.
    """
    problems = override_problems(params, overrides)
    if problems:
        raise SpecError(problems)
    result: dict[str, Any] = copy.deepcopy(dict(params))
    for key, value in overrides.items():
        result = set_path(result, key, value)
    return result
