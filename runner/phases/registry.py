"""Resolve a phase's `uses:` to a callable, and to the pydantic model of its `with:`.

Built-in kinds map a short name to the `module:function` that implements it and to the
`module:Class` of its `with:` model, so later built-in phases join by adding one line to
`BUILTIN_PHASES` and one to `BUILTIN_OPTIONS`. Both are strings, imported only when asked for:
the option models live in torch-free modules, so `runner validate` checks a built-in phase's
`with:` without importing its function (or torch). A user's function declares its model as an
attribute, `fn.options = MyModel`. User targets are imported with the spec file's folder and
the current directory on `sys.path`, as the contract says.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from runner.errors import PhaseError

__all__ = [
    "BUILTIN_OPTIONS",
    "BUILTIN_PHASES",
    "OptionsError",
    "UsesError",
    "options_model",
    "phase_options",
    "resolve_uses",
    "source_file_of",
    "target_of",
]

PhaseFunction = Callable[[Any], Any]

BUILTIN_PHASES: dict[str, str] = {
    "generate_instructions": "runner.llm.stage1.phases:generate_instructions",
    "generate_responses": "runner.llm.stage1.phases:generate_responses",
    "critic_filter": "runner.llm.stage1.phases:critic_filter",
    "qc": "runner.llm.stage1.phases:qc",
    "evaluate": "runner.llm.evaluation.phase:evaluate",
    "merge": "runner.llm.stage1.merge:merge",
    "export": "runner.llm.stage1.export:export",
    "sft": "runner.llm.sft.phase:sft",
}


BUILTIN_OPTIONS: dict[str, str] = {
    "generate_instructions": "runner.llm.stage1.options:GenerateInstructionsOptions",
    "generate_responses": "runner.llm.stage1.options:GenerateResponsesOptions",
    "critic_filter": "runner.llm.stage1.options:CriticFilterOptions",
    "qc": "runner.llm.stage1.options:QcOptions",
    "evaluate": "runner.llm.evaluation.options:EvaluateOptions",
    "merge": "runner.llm.stage1.options:MergeOptions",
    "export": "runner.llm.stage1.options:ExportOptions",
    "sft": "runner.llm.sft.options:SftOptions",
}


class UsesError(Exception):
    """`uses:` names nothing importable or callable; the message says what to fix."""


class OptionsError(UsesError):
    """A phase function's `options` is not a pydantic model class."""


def target_of(uses: str) -> str:
    """The `module:function` a `uses:` value stands for (built-in names expanded)."""
    return BUILTIN_PHASES.get(uses, uses)


def _import_path(spec_dir: Path | None) -> list[str]:
    paths = [str(Path.cwd())]
    if spec_dir is not None:
        paths.insert(0, str(Path(spec_dir).resolve()))
    return [p for p in paths if p not in sys.path]


def resolve_uses(uses: str, spec_dir: Path | None = None) -> PhaseFunction:
    """Import and return the callable behind `uses`, or raise `UsesError` saying why not."""
    target = target_of(uses)
    if ":" not in target:
        known = ", ".join(sorted(BUILTIN_PHASES))
        raise UsesError(
            f"'{uses}' is neither a built-in phase ({known}) nor 'module:function'"
        )
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UsesError(f"'{uses}' must be 'module:function'")
    for p in reversed(_import_path(spec_dir)):
        sys.path.insert(0, p)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsesError(f"cannot import module '{module_name}': {exc}") from None
    except Exception as exc:  # a user module that raises at import time
        raise UsesError(
            f"importing module '{module_name}' raised {type(exc).__name__}: {exc}"
        ) from None
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise UsesError(f"module '{module_name}' has no attribute '{attr}'")
    if not callable(fn):
        raise UsesError(f"'{target}' is not callable")
    return fn


def source_file_of(fn: PhaseFunction) -> str | None:
    """Path of the module that defines `fn`, for the phase fingerprint's source hash."""
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        return None
    return os.path.abspath(path) if path else None


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def options_model(uses: str, spec_dir: Path | None = None) -> type[BaseModel] | None:
    """The pydantic model of the `with:` of a phase that `uses` this, or None (a free mapping).

    A built-in's comes from `BUILTIN_OPTIONS` without importing the phase itself; a user
    function's is its `options` attribute. Raises `UsesError` when `uses` does not resolve or
    its `options` is not a pydantic model class.
    """
    if uses in BUILTIN_OPTIONS:
        module_name, _, attr = BUILTIN_OPTIONS[uses].partition(":")
        model = getattr(importlib.import_module(module_name), attr)
    else:
        model = getattr(resolve_uses(uses, spec_dir), "options", None)
        if model is None:
            return None
    if not _is_model(model):
        raise OptionsError(f"'{uses}'.options must be a pydantic model class (a BaseModel "
                        f"subclass), got {model!r}")
    return model


def phase_options(uses: str, spec_dir: Path | None, params: dict[str, Any], phase: str) -> BaseModel | None:
    """The phase's `with:` validated by its model (for `ctx.options`), or None without one.

    `runner validate` checked it already, with every problem located in the spec; this runs
    again at run time without that context (types and ranges only), so a phase never sees
    values its model refuses. Raises `PhaseError` naming the keys.
    """
    model = options_model(uses, spec_dir)
    if model is None:
        return None
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(f"with.{'.'.join(str(x) for x in e['loc']) or '(all)'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise PhaseError(phase, problems) from None
