"""Resolve a phase's `uses:` to a callable: a built-in phase kind or `module:function`.

Built-in kinds map a short name to the `module:function` that implements it, so later built-in
phases join by adding one line to `BUILTIN_PHASES`. User targets are imported with the spec
file's folder and the current directory on `sys.path`, as the contract says.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["BUILTIN_PHASES", "UsesError", "resolve_uses", "source_file_of", "target_of"]

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


class UsesError(Exception):
    """`uses:` names nothing importable or callable; the message says what to fix."""


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
