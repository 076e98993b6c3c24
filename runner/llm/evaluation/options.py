"""The `with:` model of the `evaluate` phase, and the eval-set reader both it and the phase use.

Torch-free, so `runner validate` checks the eval set and few-shot file of an `evaluate` phase
(they must exist and parse) without loading model code. The meaning of each key is in
`phase.py`'s docstring.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from runner.llm.builtin import PhaseOptions, PhaseRef, spec_file
from runner.llm.evaluation.verifiable import validate_args
from runner.llm.text.prompts import read_fewshot
from runner.llm.text.templates import Templates

__all__ = ["DEFAULT_EVAL_SET", "DEFAULT_FEWSHOT", "EvaluateOptions", "read_eval_set"]

_FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "eval"
DEFAULT_EVAL_SET = _FIXTURES / "verifiable.jsonl"
DEFAULT_FEWSHOT = _FIXTURES / "fewshot.jsonl"


def read_eval_set(path: Path) -> tuple[list[dict[str, Any]], str]:
    """The items of an eval-set JSONL file (checkers and args validated) and its sha256;
    ValueError saying what is wrong with it."""
    if not path.is_file():
        raise ValueError(f"eval set not found: {path}")
    data = path.read_bytes()
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for lineno, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON: {exc.msg}") from None
        missing = [k for k in ("id", "instruction", "checker") if not isinstance(item, dict) or k not in item]
        if missing:
            raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
        try:
            validate_args(item["checker"], item.get("args") or {})
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if str(item["id"]) in seen:
            raise ValueError(f"{where}: duplicate id {item['id']!r}")
        seen.add(str(item["id"]))
        items.append({"id": str(item["id"]), "instruction": str(item["instruction"]),
                      "checker": item["checker"], "args": dict(item.get("args") or {})})
    if not items:
        raise ValueError(f"eval set {path} holds no items")
    return items, hashlib.sha256(data).hexdigest()


class EvaluateOptions(PhaseOptions):
    """`evaluate`: base vs tuned model, greedy, on verifiable instructions."""

    eval_set: str | None = None  # default: the shipped fixtures/eval/verifiable.jsonl
    limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=16, ge=1)
    max_new_tokens: int = Field(default=96, ge=1)
    base_fewshot: str | None = None  # default: the shipped fixtures/eval/fewshot.jsonl
    shots: int = Field(default=3, ge=0)
    adapter_from: PhaseRef | None = None  # default: the latest earlier phase naming an adapter
    adapter_dir: str | None = None  # after adapter_from: the two exclude each other
    alpha: float = Field(default=0.01, gt=0.0, lt=1.0)
    templates: Templates | None = None

    @field_validator("eval_set")
    @classmethod
    def _eval_set_parses(cls, value: str | None, info: ValidationInfo) -> str | None:
        path = spec_file(value, info) if value is not None else None
        if path is not None:
            read_eval_set(path)  # its ValueError is the problem's message
        return value

    @field_validator("base_fewshot")
    @classmethod
    def _fewshot_parses(cls, value: str | None, info: ValidationInfo) -> str | None:
        path = spec_file(value, info) if value is not None else None
        if path is not None:
            read_fewshot(path, ("instruction", "response"))
        return value

    @field_validator("adapter_dir")
    @classmethod
    def _not_with_adapter_from(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("adapter_from") is not None:
            raise ValueError("give adapter_dir or adapter_from, not both")
        return value
