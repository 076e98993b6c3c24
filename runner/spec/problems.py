"""Turn pydantic's validation errors into located, actionable `SpecProblem`s.

pydantic knows *what* is wrong and where in the data (`loc`); the YAML marks know where that
is in the file. This module joins the two and rewrites pydantic's generic wording into what a
spec author should do: an unknown key gets `did you mean 'x'?` from the keys that model
allows, a missing key is reported at the mapping that lacks it, a wrong value at the value.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from runner.errors import SpecProblem
from runner.spec.models import GATE_TAG, PHASE_TAG, GateSpec, PhaseSpec, Spec
from runner.spec.params import did_you_mean
from runner.spec.yaml_marks import KeyPath, Marks, dotted

__all__ = [
    "allowed_keys",
    "describe",
    "error_problem",
    "merge_union_messages",
    "model_at",
    "non_text_key_message",
    "problems_from_validation",
]

_TAGS = {PHASE_TAG: PhaseSpec, GATE_TAG: GateSpec}


def allowed_keys(model: type[BaseModel]) -> list[str]:
    """The keys a file may use for `model`, as written in YAML (aliases, e.g. `with`)."""
    return [f.alias or name for name, f in model.model_fields.items()]


def non_text_key_message(key: Any) -> str:
    """The one wording for a mapping key that is not text (also used by `semantics`)."""
    return f"key {key!r} must be text; quote it: '{key}'"


def _strip(tp: Any) -> Any:
    # Annotated[X, ...] -> X and X | None -> X, until something else is left.
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _child(tp: Any, part: Any) -> Any:
    tp = _strip(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, f in tp.model_fields.items():
            if part in (name, f.alias):
                return f.annotation
        return None
    origin = get_origin(tp)
    if origin is list and isinstance(part, int):
        return get_args(tp)[0]
    if origin is dict:
        return get_args(tp)[1]
    return None


def model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that validates the mapping at pydantic `loc` under `root` (None: a free one).

    Follows field annotations, so nested models need no table; a phase entry's model is
    read from the union tag pydantic puts in the loc (`<phase>` / `<gate>`).
    """
    tp: Any = root
    for part in loc:
        tp = _TAGS[part] if part in _TAGS else _child(tp, part)
        if tp is None:
            return None
    tp = _strip(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def describe(value: Any) -> str:
    """A short description of a YAML value for 'got ...' in a message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _without_tags(loc: tuple[Any, ...]) -> KeyPath:
    return tuple(part for part in loc if part not in _TAGS)


def _type_message(kind: str, msg: str, value: Any, ctx: Mapping[str, Any]) -> str:
    got = describe(value)
    if kind == "string_type":
        quote = " (quote it to make it text)" if isinstance(value, (int, float, bool)) else ""
        return f"expected text, got {got}{quote}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {got}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {got}"
    if kind == "list_type":
        return f"expected a list, got {got}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping (key: value lines), got {got}"
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = did_you_mean(value, options) if isinstance(value, str) else ""
        return f"expected one of {ctx.get('expected')}, got {got}{hint}"
    # Range errors and the rest: pydantic's sentence is clear ("Input should be greater
    # than 0"); say what was given.
    return f"{msg[:1].lower()}{msg[1:]}, got {got}"


def error_problem(err: Mapping[str, Any], root: type[BaseModel], marks: Marks, file: str,
                  prefix: KeyPath = ()) -> SpecProblem:
    """One pydantic error of validating the data at `prefix` against `root`, located."""
    kind: str = err["type"]
    loc = tuple(err["loc"])
    path = prefix + _without_tags(loc)
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    if "[key]" in path:  # a mapping key that is wrong: report it at the key
        where = path[: path.index("[key]")]
        line, col = marks.key(where)
        if kind == "string_type" or not isinstance(err.get("input"), str):
            return SpecProblem(file, line, col, dotted(where), non_text_key_message(err.get("input")))
        message = _type_message(kind, str(err.get("msg", "")), err.get("input"), ctx)
        if message.startswith("expected "):
            message = "this key must be " + message[len("expected "):]
        return SpecProblem(file, line, col, dotted(where), message)
    if kind == "extra_forbidden":
        key = path[-1]
        model = model_at(root, loc[:-1])
        allowed = allowed_keys(model) if model else []
        if model is PhaseSpec:
            allowed.append("gate")  # what turns the entry into a gate
        hint = did_you_mean(str(key), allowed)
        if not hint and allowed:
            hint = f"; allowed here: {', '.join(allowed)}"
        line, col = marks.key(path)
        return SpecProblem(file, line, col, dotted(path), f"unknown key '{key}'{hint}")
    if kind == "missing":
        # The key is not in the file, so point at the mapping that should hold it.
        line, col = marks.value(path[:-1])
        return SpecProblem(file, line, col, dotted(path), f"missing required key '{path[-1]}'; add it")
    line, col = marks.value(path)
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        message = str(ctx["error"])
    else:
        message = _type_message(kind, str(err.get("msg", "")), err.get("input"), ctx)
    return SpecProblem(file, line, col, dotted(path), message)


def merge_union_messages(messages: list[str]) -> str:
    """`expected a number, got 'x'` and `expected a list, got 'x'` (one error per member of a
    union type) -> `expected a number, or a list, got 'x'`."""
    unique = list(dict.fromkeys(messages))
    if len(unique) == 1:
        return unique[0]
    if all(m.startswith("expected ") and ", got " in m for m in unique):
        wanted = [m[len("expected "):].rsplit(", got ", 1)[0] for m in unique]
        return "expected " + ", or ".join(wanted) + ", got " + unique[0].rsplit(", got ", 1)[1]
    return "; or ".join(unique)


def _in_file(loc: tuple[Any, ...], marks: Marks, missing: bool) -> tuple[Any, ...]:
    """`loc` without pydantic's union-member tags (`list[str]`): the parts not in the file."""
    out: list[Any] = []
    for n, part in enumerate(loc):
        here = _without_tags(tuple(out) + (part,))
        if part in _TAGS or part == "[key]" or here in marks.keys or here in marks.values \
                or (missing and n == len(loc) - 1):
            out.append(part)
    return tuple(out)


def problems_from_validation(
    exc: ValidationError, marks: Marks, file: str, model: type[BaseModel] = Spec
) -> list[SpecProblem]:
    """One located problem per error of validating a YAML file's data against `model`.

    Works for any model (decision files too); `marks` come from `load_with_marks`. The errors
    of one value against each member of a union type become one problem. Sorted by
    (line, col), like every list of problems.
    """
    grouped: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for err in exc.errors(include_url=False):
        loc = _in_file(tuple(err["loc"]), marks, err["type"] == "missing")
        grouped.setdefault(loc, []).append(dict(err, loc=loc))
    out: dict[SpecProblem, None] = {}  # ordered and without repeats
    for errs in grouped.values():
        first = error_problem(errs[0], model, marks, file)
        message = merge_union_messages([error_problem(e, model, marks, file).message for e in errs])
        out[SpecProblem(first.file, first.line, first.col, first.path, message)] = None
    return sorted(out, key=lambda p: (p.line, p.col))
