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
    "did_you_mean",
    "get_path",
    "has_path",
    "override_problems",
    "param_paths",
    "parse_set_args",
    "set_path",
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


def override_problems(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> list[SpecProblem]:
    """What is wrong with applying `overrides` to `params` (empty when nothing is)."""
    problems: list[SpecProblem] = []
    for key, value in overrides.items():
        if not has_path(params, key):
            problems.append(_problem(key, unknown_param_message(params, key)))
            continue
        current = get_path(params, key)
        if isinstance(current, Mapping) and not isinstance(value, Mapping):
            # `--set response=0.3` would wipe out a whole group that `${...}` refers into.
            children = param_paths(current)
            example = f"{key}.{children[0]}" if children else key
            problems.append(_problem(
                key, f"is a group of parameters; set one of its keys (e.g. '{example}=...') "
                "or give a mapping",
            ))
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
