"""`load_spec`: read a spec file, check everything, and return a `ResolvedSpec`.

The order is: read the file; parse YAML with marks (a syntax error or duplicate key stops
here, since nothing after it can be trusted); then run *all* the other checks — pydantic
shape, cross-references, `${...}`, `--set`, each phase's `with:` under its model — and raise
one `SpecError` holding every problem,
sorted by place. Fixing a spec is one edit-validate round, not one per mistake.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runner.errors import SpecError, SpecProblem
from runner.spec.models import Spec
from runner.spec.params import collect_set_args, declared_types, override_problems, set_path
from runner.spec.problems import describe, problems_from_validation
from runner.spec.resolved import ResolvedSpec
from runner.spec.semantics import check_semantics
from runner.spec.with_options import with_problems
from runner.spec.yaml_marks import load_with_marks

__all__ = ["load_spec", "sort_problems", "with_problems_under"]

_SHAPE = "a mapping with at least 'version', 'name' and 'phases'"


def sort_problems(problems: list[SpecProblem]) -> list[SpecProblem]:
    """By (line, col); stable, so problems at one place keep the order they were found in."""
    return sorted(problems, key=lambda p: (p.line, p.col))


def _read(path: Path, file: str) -> tuple[bytes, str]:
    def fail(message: str) -> SpecError:
        return SpecError([SpecProblem(file, 1, 1, "", message)])

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise fail("no such file; check the path") from None
    except IsADirectoryError:
        raise fail("is a directory, not a spec file") from None
    except OSError as exc:
        raise fail(f"cannot read the spec: {exc.strerror or exc}") from None
    try:
        return raw, raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None


def _apply(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(params)
    for key, value in overrides.items():
        result = set_path(result, key, value)
    return result


def load_spec(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    check_uses: bool = True,
    check_models: bool = True,
) -> ResolvedSpec:
    """Load, validate and resolve the spec at `path` with `--set` items `overrides`.

    Raises `SpecError` with every problem found, each `FILE:LINE:COL: key.path: message`
    (FILE as given); `--set` problems are reported against `--set`. With `check_uses=False`
    the `uses:` targets are not imported (for commands that only read a spec); with
    `check_models=False` a local `model.path` need not exist here (`plan` for another machine).
    """
    file = os.fspath(path)
    source_path = Path(os.path.abspath(file))
    raw, text = _read(source_path, file)
    data, marks = load_with_marks(text, file)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else describe(data)
        raise SpecError([SpecProblem(file, 1, 1, "", f"a spec must be {_SHAPE}; got {got}")])

    problems: list[SpecProblem] = []
    spec: Spec | None = None
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        problems += problems_from_validation(exc, marks, file)

    spec_params = data.get("params", {})
    spec_params = spec_params if isinstance(spec_params, dict) else None
    set_values, set_problems = collect_set_args(overrides)
    problems += set_problems
    effective = spec_params
    if spec_params is not None:
        types = data.get("param_types")
        bad = override_problems(spec_params, set_values, declared_types(types if isinstance(types, dict) else None))
        problems += bad
        if not bad:
            effective = _apply(spec_params, set_values)

    problems += check_semantics(
        data, marks, file, source_path.parent, spec_params, effective, check_uses=check_uses
    )
    # Each phase's `with:` under its model, resolved as the phase will get it (--set applied).
    problems += with_problems(data, marks, file, source_path.parent, effective, set_values,
                              check_uses=check_uses)
    if problems or spec is None:
        # dict.fromkeys: a non-text key is seen by pydantic and by `semantics`; report it once.
        raise SpecError(sort_problems(list(dict.fromkeys(problems))))
    resolved = ResolvedSpec(
        spec=spec,
        source_path=source_path,
        spec_dir=source_path.parent,
        source_text=text,
        sha256=hashlib.sha256(raw).hexdigest(),
        params=copy.deepcopy(effective) if effective is not None else {},  # not shared with spec
        overrides=set_values,
    )
    model_problems = _model_folder_problems(resolved, data, marks, file) if check_models else []
    if model_problems:
        raise SpecError(sort_problems(model_problems))
    return resolved


def with_problems_under(resolved: ResolvedSpec, params: dict[str, Any],
                        overrides: dict[str, Any]) -> list[SpecProblem]:
    """The problems of every phase's `with:` if the run went on with `params` (a decision's
    `set` applied as `overrides`): what `runner validate` would say, for `decide` to refuse
    a value that the phases' models would refuse at run time."""
    file = str(resolved.source_path)
    data, marks = load_with_marks(resolved.source_text, file)
    if not isinstance(data, dict):
        return []
    return sort_problems(with_problems(data, marks, file, resolved.spec_dir, params, overrides))


def _model_folder_problems(resolved: ResolvedSpec, data: dict[str, Any], marks: Any, file: str) -> list[SpecProblem]:
    """A `model.path` that names a local folder must hold a model (its `config.json`).

    A path that does not exist and looks like a hub id (`org/name`, no leading `.` or `/`)
    is left to `from_pretrained`, for machines that reach a hub.
    """
    problems: list[SpecProblem] = []
    seen: set[str] = set()
    entries = data.get("phases") or []
    for i, name in enumerate(resolved.phase_names):
        model = resolved.resolved_model(name)
        if model is None or not isinstance(model.get("path"), str) or model["path"] in seen:
            continue
        seen.add(model["path"])
        where = ("phases", i, "model", "path") if isinstance(entries[i], dict) and "model" in entries[i] else ("model", "path")
        raw_path = model["path"]
        path = Path(raw_path) if Path(raw_path).is_absolute() else resolved.spec_dir / raw_path
        hub_like = not raw_path.startswith((".", "/", "~")) and raw_path.count("/") == 1
        if path.is_dir() and not (path / "config.json").is_file():
            line, col = marks.value(where)
            problems.append(SpecProblem(file, line, col, _dotted(where),
                                        f"'{raw_path}' is a folder without config.json, not a model saved with save_pretrained"))
        elif not path.exists() and not hub_like:
            line, col = marks.value(where)
            problems.append(SpecProblem(file, line, col, _dotted(where),
                                        f"model folder '{raw_path}' does not exist (resolved to {path}); "
                                        "fix the path or set it with --set"))
    return problems


def _dotted(where: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if k else str(p)) for k, p in enumerate(where))
