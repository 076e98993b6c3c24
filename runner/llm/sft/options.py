"""The `with:` model of the `sft` phase (and its `lora:` mapping): keys, types, ranges, defaults.

Torch-free, so `runner validate` checks an sft phase without loading torch; `phase.py` reads
the validated model. The meaning of each key is in `phase.py`'s docstring.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, ValidationInfo, field_validator

from runner.llm.builtin import PhaseOptions, PhaseRef
from runner.llm.text.templates import Templates

__all__ = ["SCHEDULES", "LoraOptions", "SftOptions"]

Schedule = Literal["cosine", "linear", "constant"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)


class LoraOptions(PhaseOptions):
    """`with.lora`: the LoRA adapters' rank, scale, dropout and target modules."""

    r: int = Field(default=16, ge=1)
    alpha: float = Field(default=32.0, gt=0.0)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: Literal["all-linear"] | list[str] = "all-linear"

    @field_validator("target_modules")
    @classmethod
    def _some_modules(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and (not value or not all(m.strip() for m in value)):
            raise ValueError("give 'all-linear' or a non-empty list of module names (e.g. [q_proj, v_proj])")
        return value


class SftOptions(PhaseOptions):
    """`sft`: LoRA fine-tuning on the source's pairs."""

    source: PhaseRef | None = None  # default: the latest pair-critic, response or merge phase
    templates: Templates | None = None
    lora: LoraOptions = Field(default_factory=lambda: LoraOptions())
    learning_rate: float = Field(default=2e-4, gt=0.0)
    schedule: Schedule = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    steps: int | None = Field(default=None, ge=1)  # default: whole epochs
    epochs: int | None = Field(default=None, ge=1)  # after `steps`: the two exclude each other
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_seq_len: int = Field(default=512, ge=8)
    packing: bool = True
    checkpoint_every: int = Field(default=10, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    loss_chunk: int = Field(default=512, ge=1)  # positions per loss chunk: peak memory ~ chunk x vocab
    seed: int | None = Field(default=None, ge=0)  # default: the phase's seed
    # true (every decoder layer), false, or the fraction of layers; default: true on CUDA.
    gradient_checkpointing: bool | float | None = None
    weight_decay: float = Field(default=0.0, ge=0.0)
    max_grad_norm: float = Field(default=1.0, ge=0.0)  # 0: no clipping
    log_every: int = Field(default=5, ge=1)

    @field_validator("epochs")
    @classmethod
    def _not_with_steps(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("steps") is not None:
            raise ValueError("give steps or epochs, not both")
        return value

    @field_validator("gradient_checkpointing")
    @classmethod
    def _fraction(cls, value: bool | float | None) -> bool | float | None:
        if not isinstance(value, bool) and value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"must be true, false or a fraction of the layers in [0, 1], got {value}")
        return value
