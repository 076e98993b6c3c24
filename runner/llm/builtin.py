"""What the built-in phases share: the `with:` model base, the model spec, provenance, inputs.

Kept apart from `phases.py` so each phase function there reads as its recipe. Everything a
record gets from here is a pure function of the run (id, iteration, phase, spec, commit), the
model files and the batch, never of the clock or the process, so an interrupted and resumed
run writes the same records as an uninterrupted one.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from runner.console.view import progress as console_progress
from runner.errors import PhaseError
from runner.llm.text.cleaning import select_instructions
from runner.llm.text.templates import Templates

__all__ = [
    "STAGES",
    "PhaseOptions",
    "PhaseRef",
    "default_source",
    "input_names",
    "model_spec",
    "options_of",
    "own_records",
    "progress",
    "provenance",
    "spec_file",
    "stage_of",
    "template_overrides",
    "usable_instructions",
    "with_error",
]

# The `stage` field of each built-in record says which kind of phase wrote it, so a phase can
# find its inputs by what they are rather than by name.
STAGES = ("instructions", "responses", "instruction_critic", "pair_critic")


class PhaseOptions(BaseModel):
    """Base of a built-in phase's `with:` model: typed, ranged, no unknown keys.

    Strict: a number in quotes is text, `true` is not a number, and `1.0` is not a count. A key
    given as null takes its default, as it did before the models. With a validation context
    (`runner validate`: `spec_dir`, the phases before this one) the models also check that
    files exist and parse and that phase names point backwards; at run time the phase
    validates without a context, so only types and ranges are checked again.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


def _known_phase(name: str, info: ValidationInfo) -> str:
    """A phase name in `with:` (`source`, a role) must be a phase this one may read."""
    ctx = info.context or {}
    if "phases_before" not in ctx:
        return name
    earlier: list[str] = list(ctx["phases_before"])
    readable = ctx.get("inputs")
    if name in earlier and (readable is None or name in readable):
        return name
    if name in earlier:
        raise ValueError(f"phase '{name}' is not in this phase's inputs ({', '.join(readable or [])}); "
                         "add it to `inputs` or name one of them")
    if name in ctx.get("gates", ()):
        raise ValueError(f"'{name}' is a gate, not a phase; name a phase that runs before this one")
    if name in ctx.get("phases", ()):
        raise ValueError(f"phase '{name}' does not run before this one; name an earlier phase "
                         "or move it")
    close = difflib.get_close_matches(name, earlier, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else \
        f"; phases before this one: {', '.join(earlier) or 'none'}"
    raise ValueError(f"no phase named '{name}'{hint}")


PhaseRef = Annotated[str, AfterValidator(_known_phase)]
"""A `with:` value naming an earlier phase (checked by `runner validate`)."""


def template_overrides(templates: Templates | None) -> dict[str, Any] | None:
    """The fields a spec set on `templates` (what `templates_from` applies to the defaults)."""
    return None if templates is None else templates.model_dump(exclude_unset=True)


def spec_file(value: str, info: ValidationInfo) -> Path | None:
    """The file `value` names (relative to the spec's folder), or None outside validation."""
    spec_dir = (info.context or {}).get("spec_dir")
    if spec_dir is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(spec_dir) / path


def _fields_at(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """The keys of the (nested) model at `loc`, for a did-you-mean."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = next((a for a in (field.annotation, *get_args(field.annotation))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def with_error(phase: str, exc: ValidationError, model: type[BaseModel]) -> PhaseError:
    """A phase's `with:` that fails its model at run time: one PhaseError naming every key."""
    parts = []
    for err in exc.errors(include_url=False):
        key = ".".join(str(x) for x in err["loc"])
        if "[key]" in err["loc"]:  # a mapping key the model does not allow (a qc role)
            where = ".".join(str(x) for x in err["loc"][: err["loc"].index("[key]") - 1])
            parts.append(f"with.{where}: unknown key {err.get('input')!r}: {err['msg']}")
        elif err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), _fields_at(model, err["loc"][:-1]), n=1)
            parts.append(f"unknown key with.{key}" + (f"; did you mean '{close[0]}'?" if close else ""))
        elif err["type"] == "missing":
            parts.append(f"with.{key} is required")
        else:
            parts.append(f"with.{key}: {err['msg']}, got {err.get('input')!r}")
    return PhaseError(phase, "; ".join(parts))


OptionsT = TypeVar("OptionsT", bound=BaseModel)


def options_of(ctx: Any, model: type[OptionsT]) -> OptionsT:
    """The phase's validated `with:`: `ctx.options` when the engine made it, else validated
    here from `ctx.params` (a phase run without the engine); a PhaseError when it fails."""
    given = getattr(ctx, "options", None)
    if isinstance(given, model):
        return given
    try:
        return model.model_validate(dict(ctx.params or {}))
    except ValidationError as exc:
        raise with_error(str(ctx.phase), exc, model) from None


def model_spec(ctx: Any) -> dict[str, Any]:
    """The phase's model (`ctx.model_spec`); a relative path is relative to the spec's folder."""
    spec = getattr(ctx, "model_spec", None)
    if not spec or not spec.get("path"):
        raise PhaseError(str(ctx.phase), "no model: set `model: {path: ...}` in the spec")
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
