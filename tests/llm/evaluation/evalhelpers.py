"""Helpers of the evaluation tests (imported by name: conftest modules are not importable).

A real LoRA adapter of the shipped tiny base model, and the engine's real `PhaseContext`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

from runner.phases.context import PhaseContext

__all__ = ["EVAL_DIR", "LIMIT", "REPO", "TINY_BASE", "Evaluated", "make_adapter", "make_ctx",
           "sft_records"]

REPO = Path(__file__).resolve().parents[3]
TINY_BASE = REPO / "fixtures" / "tiny-base"
EVAL_DIR = REPO / "fixtures" / "eval"
LIMIT = 12


def make_adapter(folder: Path, seed: int = 0) -> Path:
    """Save a LoRA adapter of tiny-base with random (non-zero) weights into `folder`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(TINY_BASE))
    torch.manual_seed(seed)
    # init_lora_weights=False: B is random too, so the adapter really changes the outputs
    # (peft's default B = 0 would make the tuned model equal to the base one).
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(folder))
    return folder


def make_ctx(root: Path, params: dict[str, Any],
             read_input: Callable[[str], list[dict[str, Any]]],
             inputs: list[str] | None = None) -> PhaseContext:
    """The engine's `PhaseContext` for phase `evaluate` in run folder `root`."""
    return PhaseContext(
        run_id="eval-test", phase="evaluate", iteration=1, run_seed=1234, params=params,
        output_dir=root / "phases" / "evaluate.i1", run_dir=root, cache_dir=root / "cache",
        spec_dir=root, spec_sha256="0" * 64, git_commit=None,
        model_spec={"path": str(TINY_BASE)}, log=structlog.get_logger("test"),
        read_input=read_input, input_names=list(inputs if inputs is not None else ["sft"]),
    )


def sft_records(adapter: Path) -> Callable[[str], list[dict[str, Any]]]:
    """`read_input` of a run whose phase `sft` recorded `adapter` (and a step record)."""
    records = {"sft": [{"id": "step-000010", "loss": 1.5},
                       {"id": "final", "adapter_dir": str(adapter), "loss": 1.2}]}

    def read(name: str) -> list[dict[str, Any]]:
        return records[name]

    return read


@dataclass
class Evaluated:
    """One finished `evaluate` phase instance: its context, metrics and records."""

    root: Path
    adapter: Path
    ctx: PhaseContext
    metrics: dict[str, float]
    records: list[dict[str, Any]]
