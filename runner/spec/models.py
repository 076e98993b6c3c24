"""The run spec (version 1) as pydantic models, plus the parsed form of a gate check.

The models check the *shape* of a spec: keys, types, ranges, names. Checks that relate one
part of the spec to another (a gate check naming an earlier phase, `${params...}` pointing at
a parameter) live in `semantics.py`, which works on the raw data so that it can report its
problems even when the shape is wrong elsewhere in the file.

Every model forbids unknown keys, so a misspelt key is an error rather than silently ignored;
only `params` and a phase's `with` are free mappings, because their keys are the user's.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    ValidationInfo,
    field_validator,
)

from runner.spec.reviewers import ReviewerSpec

__all__ = [
    "CHECK_FORM",
    "GATE_TAG",
    "NAME_RE",
    "PHASE_TAG",
    "SUPPORTED_VERSION",
    "BudgetSpec",
    "Check",
    "Entry",
    "GateSpec",
    "ModelSpec",
    "ParamType",
    "PhaseSpec",
    "ResourcesSpec",
    "RetrySpec",
    "SetBounds",
    "ShardingSpec",
    "Spec",
    "parse_check",
]

SUPPORTED_VERSION = 1
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")

# The union of phase and gate entries is told apart by the presence of a `gate` key; pydantic
# puts the chosen tag into error locations, and `problems.py` strips these exact strings.
PHASE_TAG = "<phase>"
GATE_TAG = "<gate>"


def _check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"'{value}' is not a valid name; use only letters, digits, '-' and '_'")
    return value


def _number_to_text(value: Any) -> Any:
    # `CUDA_VISIBLE_DEVICES: 0` is what people write; an environment holds text anyway.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


Name = Annotated[str, AfterValidator(_check_name)]
ParamType = Literal["number", "integer", "string", "boolean", "list", "mapping", "null", "any"]
EnvValue = Annotated[str, BeforeValidator(_number_to_text)]


class _Model(BaseModel):
    # validate_by_name lets code build `PhaseSpec(with_=...)`; YAML uses the alias `with`.
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True
    )


class ModelSpec(_Model):
    """The language model a built-in LLM phase loads."""

    path: str
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    revision: str | None = None
    trust_remote_code: StrictBool = False  # strict: "yes" must not turn on remote code


class BudgetSpec(_Model):
    """What GPU time costs and how much a run may spend."""

    gpu_hour_usd: float | None = Field(default=None, gt=0)
    max_usd: float | None = Field(default=None, gt=0)


class RetrySpec(_Model):
    """How often a phase is retried, on which exceptions, with what backoff."""

    attempts: int = Field(ge=1)
    on: list[str] = Field(default_factory=lambda: ["Exception"])
    backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=30, ge=0)


class ResourcesSpec(_Model):
    """What one shard asks of a Ray cluster (ignored by the local executor)."""

    num_gpus: float = Field(default=0, ge=0)
    num_cpus: float = Field(default=1, ge=0)


class ShardingSpec(_Model):
    """How a phase's work splits into shards and where they run."""

    count: int = Field(ge=1)
    executor: Literal["local", "ray"] = "local"
    # local: worker processes; "auto" is one per visible GPU (none: shards run in-process).
    workers: int | Literal["auto"] = "auto"
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    address: str | None = None  # a Ray cluster; default $RAY_ADDRESS, else a local Ray
    max_retries: int = Field(default=3, ge=0)  # Ray task retries when a worker dies


class PhaseSpec(_Model):
    """A phase: a Python function (`uses`) or a shell command (`run`)."""

    name: Name
    uses: str | None = None
    run: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    inputs: list[str] | None = None  # None: every earlier phase
    retry: RetrySpec | None = None
    env: dict[str, EnvValue] = Field(default_factory=dict)
    model: ModelSpec | None = None
    shards: ShardingSpec | None = None
    description: str | None = None

    @property
    def kind(self) -> Literal["python", "shell"]:
        """`python` for a `uses` phase, `shell` for a `run` phase."""
        return "shell" if self.run is not None else "python"


class SetBounds(_Model):
    """What an ITERATE decision may set one `may_set` path to: `{}` is anything."""

    min: float | None = None  # numbers only, inclusive
    max: float | None = None
    choices: list[Any] | None = None  # the value must equal one of these

    @field_validator("choices")
    @classmethod
    def _some_choices(cls, value: list[Any] | None) -> list[Any] | None:
        if value is not None and not value:
            raise ValueError("an empty list of choices allows nothing; list the values allowed, or drop the path")
        return value

    @field_validator("max")
    @classmethod
    def _max_not_below_min(cls, value: float | None, info: ValidationInfo) -> float | None:
        low = info.data.get("min")
        if value is not None and low is not None and value < low:
            raise ValueError(f"max {value} is below min {low}")
        return value

    @property
    def unbounded(self) -> bool:
        """`{}`: the path and everything below it, any value of its type."""
        return self.min is None and self.max is None and self.choices is None


class GateSpec(_Model):
    """A point where the run stops for a human decision, with automatic checks."""

    gate: Name
    checks: list[str] = Field(default_factory=list)
    iterate_from: str | None = None  # None: the first phase
    # None: every parameter. A list of paths, or path -> bounds of what a decision may set.
    may_set: list[str] | dict[str, SetBounds] | None = None
    max_iterations: int | None = Field(default=None, ge=1)
    description: str | None = None

    @property
    def name(self) -> str:
        """The gate's name, so code can treat phases and gates alike."""
        return self.gate

    @property
    def bounds(self) -> dict[str, SetBounds]:
        """`may_set` as path -> bounds (a list's paths are unbounded); {} when it is None."""
        if isinstance(self.may_set, dict):
            return dict(self.may_set)
        return {path: SetBounds() for path in self.may_set or ()}

    @property
    def parsed_checks(self) -> list[Check]:
        """The checks, parsed (a validated spec's checks always parse)."""
        return [parse_check(c) for c in self.checks]


def _entry_kind(value: Any) -> str:
    if isinstance(value, GateSpec) or (isinstance(value, Mapping) and "gate" in value):
        return GATE_TAG
    return PHASE_TAG


Entry = Annotated[
    Annotated[PhaseSpec, Tag(PHASE_TAG)] | Annotated[GateSpec, Tag(GATE_TAG)],
    Discriminator(_entry_kind),
]


class Spec(_Model):
    """A whole run spec, version 1."""

    version: int
    name: Name
    seed: int = 0
    description: str | None = None
    model: ModelSpec | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    # dotted path -> the type(s) `--set` and decisions may give it (default: its own type)
    param_types: dict[str, ParamType | list[ParamType]] = Field(default_factory=dict)
    budget: BudgetSpec | None = None
    reviewers: list[ReviewerSpec] = Field(default_factory=list)  # who may decide at gates
    phases: list[Entry]

    @field_validator("version")
    @classmethod
    def _supported_version(cls, value: int) -> int:
        if value != SUPPORTED_VERSION:
            raise ValueError(
                f"spec version {value} is not supported; this runner reads version "
                f"{SUPPORTED_VERSION} (write 'version: {SUPPORTED_VERSION}')"
            )
        return value

    @field_validator("reviewers")
    @classmethod
    def _distinct_reviewers(cls, value: list[ReviewerSpec]) -> list[ReviewerSpec]:
        for attr in ("name", "key"):
            seen = [getattr(r, attr) for r in value]
            twice = sorted({x for x in seen if seen.count(x) > 1})
            if twice:
                raise ValueError(f"reviewer {attr} {twice[0][:40]!r} is listed twice; give each "
                                 "reviewer one entry and a key of their own")
        return value

    @field_validator("phases")
    @classmethod
    def _not_empty(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("a spec needs at least one phase; add an entry with 'name' and 'uses' or 'run'")
        return value


# --- gate checks -----------------------------------------------------------------------------

CHECK_FORM = "PHASE.METRIC OP NUMBER"
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_CHECK_RE = re.compile(
    r"^\s*(?P<phase>[A-Za-z0-9_-]+)\.(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?P<op><=|>=|==|!=|<|>)\s*(?P<value>" + _NUMBER + r")\s*$"
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt,
    ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}


@dataclass(frozen=True)
class Check:
    """One gate check, `PHASE.METRIC OP NUMBER`, e.g. `qc.runaway_rate < 0.05`."""

    phase: str
    metric: str
    op: str
    value: float
    expr: str

    def metric_of(self, metrics: Mapping[str, Any]) -> float | None:
        """The metric's number: `metrics[phase][metric]`, or a flat `metrics["phase.metric"]`.

        A value that is not a number (or is NaN, which is no measurement) counts as missing.
        """
        per_phase = metrics.get(self.phase)
        if isinstance(per_phase, Mapping) and self.metric in per_phase:
            raw = per_phase[self.metric]
        else:
            raw = metrics.get(f"{self.phase}.{self.metric}")
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or math.isnan(raw):
            return None
        return float(raw)

    def evaluate(self, metrics: Mapping[str, Any]) -> bool | None:
        """True or False, or None when the metric is missing (the gate treats that as failed)."""
        actual = self.metric_of(metrics)
        return None if actual is None else _OPS[self.op](actual, self.value)


def parse_check(expr: str) -> Check:
    """Parse `PHASE.METRIC OP NUMBER`; raise ValueError saying the expected form otherwise."""
    match = _CHECK_RE.match(expr) if isinstance(expr, str) else None
    if match is None:
        raise ValueError(
            f"cannot parse check '{expr}'; write it as '{CHECK_FORM}' with OP one of "
            "< <= > >= == !=, e.g. 'qc.runaway_rate < 0.05'"
        )
    return Check(
        phase=match["phase"], metric=match["metric"], op=match["op"],
        value=float(match["value"]), expr=expr.strip(),
    )
