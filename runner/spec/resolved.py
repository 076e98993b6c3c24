"""`ResolvedSpec`: a validated spec with its source, effective parameters and helpers.

This is what the engine works from. It is frozen into the run folder as JSON at `run` and
reloaded by `resume` with `from_frozen`, so a resumed run uses the spec as it was, wherever
the command is started and whatever happened to the file since; `spec_dir` is kept because
`module:function` imports and shell phases are relative to it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import UsageError
from runner.spec.interpolate import resolve_with, shell_command
from runner.spec.models import GateSpec, ModelSpec, PhaseSpec, Spec

__all__ = ["FROZEN_FORMAT", "ResolvedSpec"]

FROZEN_FORMAT = 1


@dataclass(frozen=True)
class ResolvedSpec:
    """A spec that passed every check, plus where it came from and the effective params."""

    spec: Spec
    source_path: Path  # absolute
    spec_dir: Path  # absolute; imports and shell phases are relative to it
    source_text: str
    sha256: str  # of the file's bytes
    params: dict[str, Any]  # spec params with the overrides applied
    overrides: dict[str, Any]  # dotted path -> value, as given with --set

    # --- lookups --------------------------------------------------------------------------

    @property
    def steps(self) -> list[PhaseSpec | GateSpec]:
        """Phases and gates in the order they run."""
        return list(self.spec.phases)

    @property
    def phase_names(self) -> list[str]:
        """Names of the phases (not gates), in order."""
        return [s.name for s in self.spec.phases if isinstance(s, PhaseSpec)]

    @property
    def gate_names(self) -> list[str]:
        """Names of the gates, in order."""
        return [s.gate for s in self.spec.phases if isinstance(s, GateSpec)]

    def index_of(self, name: str) -> int:
        """Position of the phase or gate `name` in `steps`; KeyError when there is none."""
        for i, step in enumerate(self.spec.phases):
            if step.name == name:
                return i
        raise KeyError(f"no phase or gate named '{name}'")

    def phase(self, name: str) -> PhaseSpec:
        """The phase `name`; KeyError when there is none."""
        for step in self.spec.phases:
            if isinstance(step, PhaseSpec) and step.name == name:
                return step
        raise KeyError(f"no phase named '{name}'")

    def gate(self, name: str) -> GateSpec:
        """The gate `name`; KeyError when there is none."""
        for step in self.spec.phases:
            if isinstance(step, GateSpec) and step.gate == name:
                return step
        raise KeyError(f"no gate named '{name}'")

    def phase_inputs(self, name: str) -> list[str]:
        """The phases `name` reads: its `inputs`, or by default every phase before it."""
        phase = self.phase(name)
        if phase.inputs is not None:
            return list(phase.inputs)
        before = self.spec.phases[: self.index_of(name)]
        return [s.name for s in before if isinstance(s, PhaseSpec)]

    def model_for(self, name: str) -> ModelSpec | None:
        """The model of phase `name`: its own `model`, else the spec's."""
        return self.phase(name).model or self.spec.model

    def iterate_start(self, gate_name: str) -> str:
        """The phase an ITERATE at `gate_name` restarts from (default: the first phase)."""
        return self.gate(gate_name).iterate_from or self.phase_names[0]

    # --- interpolation --------------------------------------------------------------------

    def resolved_with(self, phase_name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The phase's `with` with `${params...}` resolved (default: the effective params)."""
        result = resolve_with(self.phase(phase_name).with_, self.params if params is None else params)
        return dict(result)

    def resolved_run(self, phase_name: str, params: dict[str, Any] | None = None) -> str | None:
        """The phase's shell command, each `${params...}` a quoted `RUNNER_PARAM_*` variable
        (`resolved_env` holds their values), so no value becomes shell syntax; None for a
        Python phase."""
        run = self.phase(phase_name).run
        if run is None:
            return None
        return shell_command(run, self.params if params is None else params)[0]

    def resolved_env(self, phase_name: str, params: dict[str, Any] | None = None) -> dict[str, str]:
        """The phase's extra environment with `${params...}` resolved, every value as text,
        plus the `RUNNER_PARAM_*` variables its `run:` refers to.

        An environment variable is data to the shell (bash does not parse what a variable
        holds), so `env:` values are resolved in place.
        """
        params = self.params if params is None else params
        env = resolve_with(self.phase(phase_name).env, params)
        out = {k: str(v) for k, v in env.items()}
        run = self.phase(phase_name).run
        if run is not None:
            out.update(shell_command(run, params)[1])
        return out

    def resolved_model(self, phase_name: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The phase's model (its own, else the spec's) with `${params...}` resolved, or None."""
        model = self.model_for(phase_name)
        if model is None:
            return None
        return dict(resolve_with(model.model_dump(mode="json"), self.params if params is None else params))

    # --- freezing -------------------------------------------------------------------------

    def to_frozen(self) -> dict[str, Any]:
        """A JSON-ready dict that `from_frozen` turns back into an equal `ResolvedSpec`."""
        return {
            "format": FROZEN_FORMAT,
            # exclude_unset: what the file said, so a reload has the same fields set too.
            "spec": self.spec.model_dump(mode="python", by_alias=True, exclude_unset=True),
            "source_path": str(self.source_path),
            "spec_dir": str(self.spec_dir),
            "source_text": self.source_text,
            "sha256": self.sha256,
            "params": copy.deepcopy(self.params),
            "overrides": copy.deepcopy(self.overrides),
        }

    @classmethod
    def from_frozen(cls, data: dict[str, Any]) -> ResolvedSpec:
        """Rebuild from `to_frozen` output; `uses` targets are not imported again."""
        if data.get("format") != FROZEN_FORMAT:
            raise UsageError(
                f"frozen spec format {data.get('format')!r} is not supported "
                f"(this runner writes format {FROZEN_FORMAT}); use a matching runner version"
            )
        return cls(
            spec=Spec.model_validate(data["spec"]),
            source_path=Path(data["source_path"]),
            spec_dir=Path(data["spec_dir"]),
            source_text=data["source_text"],
            sha256=data["sha256"],
            params=dict(data["params"]),
            overrides=dict(data["overrides"]),
        )
