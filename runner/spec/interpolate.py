"""`${params.x.y}` references in a phase's `with`, `run` and `env`.

One small grammar serves both validation (report every bad reference with its place) and
resolution (substitute the effective parameters when a phase starts):

* `${params.a.b}` is a reference to the parameter at dotted path `a.b`;
* `$${` is a literal `${` (a shell variable `$${HOME}` reaches the shell as `${HOME}`);
* any other `${...}`, or a `${` without its `}`, is an error: silently passing it through
  would hand a shell `${params.typo}` as an empty variable.

A string that is exactly one reference takes the referenced value with its type (a number
stays a number, a list a list); a reference inside longer text is replaced by `str(value)`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.errors import SpecError
from runner.spec.params import UnlocatedProblem, did_you_mean, get_path, param_paths

__all__ = [
    "Ref",
    "TemplateError",
    "parse_template",
    "reference_problems",
    "resolve_text",
    "resolve_with",
]

_REF_RE = re.compile(r"^params\.([^.\s${}]+(?:\.[^.\s${}]+)*)$")
_ESCAPE_HINT = "write '$${' for a literal '${' (e.g. a shell variable)"


@dataclass(frozen=True)
class Ref:
    """A `${params.<path>}` reference; `path` is the dotted path under params."""

    path: str


class TemplateError(ValueError):
    """A `${` that is not a well-formed `${params.<path>}`; `content` is what was inside."""

    def __init__(self, message: str, content: str | None = None) -> None:
        super().__init__(message)
        self.content = content


def parse_template(text: str) -> list[str | Ref]:
    """Split `text` into literal pieces and references; raise TemplateError on a bad `${`."""
    pieces: list[str | Ref] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):
            literal.append("${")
            i += 3
        elif text.startswith("${", i):
            end = text.find("}", i + 2)
            if end < 0:
                raise TemplateError(f"unterminated '${{' (no closing '}}'); close it, or {_ESCAPE_HINT}")
            content = text[i + 2:end]
            match = _REF_RE.match(content)
            if match is None:
                raise TemplateError(
                    f"'${{{content}}}' is not a parameter reference; write "
                    f"'${{params.<dotted.path>}}', or {_ESCAPE_HINT}",
                    content,
                )
            if literal:
                pieces.append("".join(literal))
                literal = []
            pieces.append(Ref(match[1]))
            i = end + 1
        else:
            literal.append(text[i])
            i += 1
    if literal:
        pieces.append("".join(literal))
    return pieces


def reference_problems(text: str, params: Mapping[str, Any]) -> list[str]:
    """Messages for every bad `${...}` in `text` against `params` (empty when all are fine)."""
    try:
        pieces = parse_template(text)
    except TemplateError as exc:
        hint = ""
        if exc.content is not None:
            hint = did_you_mean(exc.content, [f"params.{p}" for p in param_paths(params)])
        return [f"{exc}{hint}"]
    problems = []
    for piece in pieces:
        if isinstance(piece, Ref):
            try:
                get_path(params, piece.path)
            except KeyError:
                hint = did_you_mean(piece.path, param_paths(params))
                problems.append(f"'${{params.{piece.path}}}' refers to an unknown parameter{hint}")
    return problems


def _fail(path: str, message: str) -> SpecError:
    return SpecError([UnlocatedProblem("params", 0, 0, path, message)])


def resolve_text(text: str, params: Mapping[str, Any]) -> Any:
    """Resolve one string: an exact `${params.x}` keeps x's type, otherwise text."""
    if "${" not in text:
        return text
    try:
        pieces = parse_template(text)
    except TemplateError as exc:
        raise _fail("", str(exc)) from None
    values: list[Any] = []
    for piece in pieces:
        if isinstance(piece, Ref):
            try:
                values.append(get_path(params, piece.path))
            except KeyError:
                raise _fail(piece.path, "unknown parameter" + did_you_mean(piece.path, param_paths(params))) from None
        else:
            values.append(piece)
    if len(pieces) == 1 and isinstance(pieces[0], Ref):
        return copy.deepcopy(values[0])  # a copy: the phase must not edit the run's params
    return "".join(v if isinstance(p, str) else str(v) for p, v in zip(pieces, values))


def resolve_with(value: Any, params: Mapping[str, Any]) -> Any:
    """`value` with every `${params...}` in its strings resolved, through dicts and lists.

    Raises `SpecError` for a reference to a parameter that does not exist.
    """
    if isinstance(value, str):
        return resolve_text(value, params)
    if isinstance(value, Mapping):
        return {k: resolve_with(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_with(v, params) for v in value]
    return value
