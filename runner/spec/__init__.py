"""The run spec: YAML with marks, pydantic models, validation, `--set` and `${params...}`.

`load_spec(path, overrides)` is the entry point; it returns a `ResolvedSpec` or raises a
`SpecError` holding every problem of the file, each located as `FILE:LINE:COL: key.path`.
"""

from runner.spec.interpolate import resolve_text, resolve_with
from runner.spec.models import (
    CHECK_FORM,
    SUPPORTED_VERSION,
    BudgetSpec,
    Check,
    GateSpec,
    ModelSpec,
    PhaseSpec,
    RetrySpec,
    SetBounds,
    Spec,
    parse_check,
)
from runner.spec.params import (
    SET_SOURCE,
    UnlocatedProblem,
    apply_overrides,
    get_path,
    has_path,
    param_paths,
    parse_set_args,
    set_path,
    unknown_param_message,
)
from runner.spec.problems import problems_from_validation
from runner.spec.resolved import ResolvedSpec
from runner.spec.validate import load_spec, with_problems_under
from runner.spec.yaml_marks import Marks, load_with_marks

__all__ = [
    "CHECK_FORM",
    "SET_SOURCE",
    "SUPPORTED_VERSION",
    "BudgetSpec",
    "Check",
    "GateSpec",
    "Marks",
    "ModelSpec",
    "PhaseSpec",
    "ResolvedSpec",
    "RetrySpec",
    "SetBounds",
    "Spec",
    "UnlocatedProblem",
    "apply_overrides",
    "get_path",
    "has_path",
    "load_spec",
    "load_with_marks",
    "param_paths",
    "parse_check",
    "parse_set_args",
    "problems_from_validation",
    "resolve_text",
    "resolve_with",
    "set_path",
    "unknown_param_message",
    "with_problems_under",
]
