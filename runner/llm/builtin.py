"""What the four built-in phases share: parameters, the model spec, provenance, inputs.

Kept apart from `phases.py` so each phase function there reads as its recipe. Everything a
record gets from here is a pure function of the run (id, iteration, phase, spec, commit), the
model files and the batch, never of the clock or the process, so an interrupted and resumed
run writes the same records as an uninterrupted one.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from runner.console.view import progress as console_progress
from runner.errors import PhaseError
from runner.llm.text.cleaning import select_instructions

__all__ = [
    "STAGES",
    "Params",
    "default_source",
    "input_names",
    "model_spec",
    "own_records",
    "progress",
    "provenance",
    "stage_of",
    "usable_instructions",
]

# The `stage` field of each built-in record says which kind of phase wrote it, so a phase can
# find its inputs by what they are rather than by name.
STAGES = ("instructions", "responses", "instruction_critic", "pair_critic")


class Params:
    """A phase's `with:` mapping, checked against the keys the phase knows."""

    def __init__(self, ctx: Any, known: Iterable[str]) -> None:
        self.phase = str(ctx.phase)
        self.raw: dict[str, Any] = dict(ctx.params or {})
        known = sorted(known)
        for key in self.raw:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise PhaseError(self.phase, f"unknown key with.{key}{hint} (known: "
                                 f"{', '.join(known)})")

    def get(self, key: str, default: Any = None) -> Any:
        value = self.raw.get(key, default)
        return default if value is None else value

    def required(self, key: str) -> Any:
        if self.raw.get(key) is None:
            raise PhaseError(self.phase, f"with.{key} is required")
        return self.raw[key]

    def number(self, key: str, default: float, lo: float, hi: float = math.inf) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise PhaseError(self.phase, f"with.{key} must be a number in [{lo}, {hi}], "
                             f"got {value!r}")
        return float(value)

    def integer(self, key: str, default: int | None, lo: int = 0) -> int:
        value = self.required(key) if default is None else self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise PhaseError(self.phase, f"with.{key} must be an integer >= {lo}, got {value!r}")
        return int(value)


def model_spec(ctx: Any, params: Params) -> dict[str, Any]:
    """The phase's model (`ctx.model_spec`); a relative path is relative to the spec's folder."""
    spec = getattr(ctx, "model_spec", None)
    if not spec or not spec.get("path"):
        raise PhaseError(params.phase, "no model: set `model: {path: ...}` in the spec")
    spec = dict(spec)
    spec_dir = getattr(ctx, "spec_dir", None)
    path = Path(str(spec["path"])).expanduser()
    if not path.is_absolute() and spec_dir is not None and (Path(spec_dir) / path).is_dir():
        spec["path"] = str((Path(spec_dir) / path).resolve())
    return spec


def provenance(
    ctx: Any, model_hash: str, batch_seed: int, params: dict[str, Any]
) -> dict[str, Any]:
    """The `provenance` of every record: who, where in the run, which model and settings."""
    return {
        "run_id": ctx.run_id,
        "iteration": ctx.iteration,
        "phase": ctx.phase,
        "spec_sha256": ctx.spec_sha256,
        "git_commit": ctx.git_commit,
        "model_hash": model_hash,
        "batch_seed": batch_seed,
        "params": params,
    }


def progress(ctx: Any, total: int, desc: str, done: int = 0) -> Any:
    """A bar in the console's live view: the engine's `ctx.progress` when it offers one, else
    the console's directly (both draw nothing without a terminal)."""
    make = getattr(ctx, "progress", None)
    return make(total, desc, done) if callable(make) else console_progress(total, desc, done)


def own_records(ctx: Any, written: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All records of this phase instance, resumed batches included, for its metrics.

    Reads the committed batches back through `ctx.records()`; where the engine offers no
    such method, falls back to the records this process wrote (after a resume, the metrics
    then cover only the batches this process ran).
    """
    read = getattr(ctx, "records", None)
    if not callable(read):
        return written
    records = list(read())
    return records if len(records) >= len(written) else written


def input_names(ctx: Any) -> list[str]:
    """The phases `ctx.input` may read, in spec order (empty if the engine does not say)."""
    names = getattr(ctx, "input_names", None)
    return [str(n) for n in (names() if callable(names) else names or [])]


def stage_of(records: list[dict[str, Any]]) -> str | None:
    """The `stage` of a phase's records (None for records of a user phase)."""
    return records[0].get("stage") if records else None


def default_source(ctx: Any, stages: tuple[str, ...], phase: str) -> str:
    """The latest earlier phase whose records are of one of `stages`."""
    earlier = input_names(ctx)
    if earlier:
        for name in reversed(earlier):
            try:
                if stage_of(ctx.input(name)) in stages:
                    return str(name)
            except Exception:  # a shell phase without records, a gate
                continue
    raise PhaseError(phase, f"with.source is required: the phase whose {' or '.join(stages)} "
                     "records to read")


def usable_instructions(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The instructions a consumer works on, and how many duplicates were dropped.

    From an instruction generator: its kept, deduplicated instructions, at most its target
    `count` (`cleaning.select_instructions`). From a critic or a user phase: the records
    with an `instruction` whose `keep` is not false (a critic keeps what it accepted).
    """
    if stage_of(records) == "instructions":
        limit = records[0].get("provenance", {}).get("params", {}).get("count")
        return select_instructions(records, limit)
    return [r for r in records if r.get("instruction") and r.get("keep", True)], 0
