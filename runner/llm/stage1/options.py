"""The `with:` models of the Stage-1 phases: every key, its type, range and default.

Torch-free, so `runner validate` checks a spec without loading model code: the registry names
these classes as `module:Class` strings. The phases read their validated model (`options_of`).
With a validation context, few-shot files must exist and parse and `source` (and the roles of
`phases:`) must name a phase this one may read.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, ValidationInfo, field_validator

from runner.llm.builtin import STAGES, PhaseOptions, PhaseRef, spec_file
from runner.llm.text.prompts import read_fewshot
from runner.llm.text.templates import Templates

__all__ = [
    "CriticFilterOptions",
    "ExportOptions",
    "GenerateInstructionsOptions",
    "GenerateResponsesOptions",
    "MergeOptions",
    "QcOptions",
    "Role",
]

Role = Literal["instructions", "instruction_critic", "responses", "pair_critic"]
assert set(get_args(Role)) == set(STAGES)  # one list of roles


def _check_fewshot(value: str | None, info: ValidationInfo, require: tuple[str, ...],
                   labelled: bool = False) -> str | None:
    path = spec_file(value, info) if value is not None else None
    if path is not None:
        read_fewshot(path, require, labelled)  # its ValueError is the problem's message
    return value


class _Sampling(PhaseOptions):
    """What both generators share: sampling, few-shot prompts, batches."""

    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.1, ge=0.01)
    shots: int = Field(default=3, ge=0)
    templates: Templates | None = None
    # row: each row draws its own few-shot examples; batch: one draw per batch, so the rows of
    # a batch share one prompt (prefilled once by the refill engine). Recorded in provenance.
    fewshot_draw: Literal["row", "batch"] = "row"
    slots: int | None = Field(default=None, ge=1)  # decoding slots; default batch_size


class GenerateInstructionsOptions(_Sampling):
    """`generate_instructions`: ceil(count * oversample) samples from few-shot prompts."""

    count: int = Field(ge=1)
    oversample: float = Field(default=2.0, ge=1.0)
    temperature: float = Field(default=0.8, ge=0.0)
    max_new_tokens: int = Field(default=64, ge=1)
    batch_size: int = Field(default=16, ge=1)
    fewshot: str  # JSONL of {"instruction": ...}

    @field_validator("fewshot")
    @classmethod
    def _fewshot_parses(cls, value: str, info: ValidationInfo) -> str | None:
        return _check_fewshot(value, info, ("instruction",))


class GenerateResponsesOptions(_Sampling):
    """`generate_responses`: answers to the source's usable instructions."""

    source: PhaseRef | None = None  # default: the latest instruction phase or critic
    temperature: float = Field(default=0.7, ge=0.0)
    max_new_tokens: int = Field(default=128, ge=1)
    batch_size: int = Field(default=8, ge=1)
    fewshot: str  # JSONL of {"instruction": ..., "response": ...}

    @field_validator("fewshot")
    @classmethod
    def _fewshot_parses(cls, value: str, info: ValidationInfo) -> str | None:
        return _check_fewshot(value, info, ("instruction", "response"))


class CriticFilterOptions(PhaseOptions):
    """`critic_filter`: the single-token A/B critic of instructions or pairs."""

    source: PhaseRef | None = None  # default: the latest response or instruction phase
    kind: Literal["instruction", "pair"] | None = None  # default: from the source's records
    confidence_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    labels: list[str] = Field(default_factory=lambda: [" A", " B"], min_length=2, max_length=2)
    shots: int | None = Field(default=None, ge=0)  # default: 4 with a few-shot file, else 0
    batch_size: int = Field(default=16, ge=1)
    debias: bool = True  # score both label orders and average the yes-probabilities
    probes: int = Field(default=24, ge=0)  # planted bad items of each kind in the self-test
    templates: Templates | None = None
    fewshot: str | None = None  # after `kind`: which keys its examples need depends on it

    @field_validator("fewshot")
    @classmethod
    def _fewshot_parses(cls, value: str | None, info: ValidationInfo) -> str | None:
        need = ("instruction", "response") if info.data.get("kind") == "pair" else ("instruction",)
        return _check_fewshot(value, info, need, labelled=True)


class QcOptions(PhaseOptions):
    """`qc`: which phase plays which role (default: found by the records' stage)."""

    phases: dict[Role, PhaseRef] | None = None
    max_new_tokens: int | None = Field(default=None, ge=1)  # default: the response phase's


class MergeOptions(PhaseOptions):
    """`merge`: the sharded phases to join, by role; `pair_critic` is required."""

    phases: dict[Role, PhaseRef]
    batch_size: int = Field(default=1000, ge=1)

    @field_validator("phases")
    @classmethod
    def _has_pair_critic(cls, value: dict[str, str]) -> dict[str, str]:
        if "pair_critic" not in value:
            raise ValueError("needs the role pair_critic (the phase whose accepted pairs are merged)")
        return value


class ExportOptions(PhaseOptions):
    """`export`: the kept pairs of `source` as a dataset (jsonl, parquet and a card)."""

    source: PhaseRef | None = None  # default: the latest pair critic or response phase
    dir: str | None = Field(default=None, min_length=1)  # also publish here (spec-relative)
    license: str = Field(default="unknown", min_length=1, pattern=r"\S")  # the card's license id
