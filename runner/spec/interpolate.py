"""`${params.x.y}` references in a phase's `with`, `run` and `env`.

One small grammar serves both validation (report every bad reference with its place) and
resolution (substitute the effective parameters when a phase starts):

* `${params.a.b}` is a reference to the parameter at dotted path `a.b`;
* `$${` is a literal `${` (a shell variable `$${HOME}` reaches the shell as `${HOME}`);
* any other `${...}`, or a `${` without its `}`, is an error: silently passing it through
  would hand a shell `${params.typo}` as an empty variable.

A string that is exactly one reference takes the referenced value with its type (a number
stays a number, a list a list); a reference inside longer text is replaced by `str(value)`.

A shell command (`run:`) is different: there a value must stay data, never become shell syntax,
whatever a decision sets it to (`0.1; touch pwned`). So `shell_command` replaces each reference
by an environment variable that holds the value (`RUNNER_PARAM_LR`), quoted for where the
reference stands: `"${RUNNER_PARAM_LR}"` outside quotes, `${RUNNER_PARAM_LR}` inside double
quotes, `'"${RUNNER_PARAM_LR}"'` inside single quotes. bash expands a variable once and never
parses what it holds, so `echo lr=${params.lr}` prints the value as text, as GitHub's hardening
guide advises for workflow `run:` steps.
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
    "PARAM_ENV_PREFIX",
    "Ref",
    "TemplateError",
    "parse_template",
    "reference_problems",
    "resolve_text",
    "resolve_with",
    "shell_command",
]

PARAM_ENV_PREFIX = "RUNNER_PARAM_"

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


def _quote_state(text: str, state: str) -> str:
    """The quoting bash is in after `text`, starting in `state` (none, single or double)."""
    i = 0
    while i < len(text):
        ch = text[i]
        if state == "single":
            state = "none" if ch == "'" else state
        elif ch == "\\":
            i += 1  # an escaped character, outside single quotes
        elif state == "double":
            state = "none" if ch == '"' else state
        elif ch == "'":
            state = "single"
        elif ch == '"':
            state = "double"
        i += 1
    return state


def _env_name(path: str, taken: dict[str, str]) -> str:
    base = PARAM_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", path).upper()
    name, n = base, 2
    while taken.get(name, path) != path:  # `a.b_c` and `a_b.c` would share a name
        name, n = f"{base}_{n}", n + 1
    return name


def shell_command(text: str, params: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """`run:` with every `${params...}` as a quoted environment variable, and those variables.

    Returns (command, {variable: value as text}); the value text is what `resolve_text`
    would have put into the command. Raises `SpecError` like `resolve_text`.
    """
    if "${" not in text:
        return text, {}
    try:
        pieces = parse_template(text)
    except TemplateError as exc:
        raise _fail("", str(exc)) from None
    out: list[str] = []
    env: dict[str, str] = {}
    owners: dict[str, str] = {}  # variable -> the parameter path it holds
    state = "none"
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            state = _quote_state(piece, state)
            continue
        try:
            value = get_path(params, piece.path)
        except KeyError:
            raise _fail(piece.path, "unknown parameter" + did_you_mean(piece.path, param_paths(params))) from None
        name = _env_name(piece.path, owners)
        owners[name] = piece.path
        env[name] = str(value)
        ref = "${" + name + "}"
        out.append({"none": f'"{ref}"', "double": ref, "single": f"'\"{ref}\"'"}[state])
    return "".join(out), env
