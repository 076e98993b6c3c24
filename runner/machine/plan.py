"""The plan: the spec's phases and gates in order, checked when built."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PhaseStep:
    """A phase of the plan."""

    name: str


@dataclass(frozen=True)
class GateStep:
    """A gate of the plan; `iterate_from` is already defaulted to the first phase."""

    name: str
    iterate_from: str
    may_set: tuple[str, ...] | None = None
    max_iterations: int | None = None
    checks: tuple[str, ...] = ()


Step = PhaseStep | GateStep


class PlanError(ValueError):
    """A plan definition with problems; `.problems` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid plan: " + "; ".join(problems))


@dataclass(frozen=True)
class Plan:
    """The ordered steps of a run; checked on construction (raises `PlanError`)."""

    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        problems: list[str] = []
        seen: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            if step.name in seen:
                problems.append(f"step {i}: name '{step.name}' is already used by step "
                                f"{seen[step.name]}; give every phase and gate its own name")
            seen.setdefault(step.name, i)
            if isinstance(step, GateStep):
                before = [s.name for s in self.steps[:i] if isinstance(s, PhaseStep)]
                if step.iterate_from not in before:
                    problems.append(f"gate '{step.name}': iterate_from '{step.iterate_from}' is "
                                    f"not a phase before the gate (phases before it: "
                                    f"{', '.join(before) or 'none'})")
                if step.max_iterations is not None and step.max_iterations < 1:
                    problems.append(f"gate '{step.name}': max_iterations must be at least 1")
            elif not isinstance(step, PhaseStep):
                problems.append(f"step {i}: {step!r} is neither a PhaseStep nor a GateStep")
        if not any(isinstance(s, PhaseStep) for s in self.steps):
            problems.append("the plan has no phase; add at least one")
        if problems:
            raise PlanError(problems)

    def index_of(self, name: str) -> int:
        """The index of the step called `name` (KeyError if none)."""
        for i, step in enumerate(self.steps):
            if step.name == name:
                return i
        raise KeyError(name)

    def gate(self, name: str) -> GateStep | None:
        """The gate called `name`, or None."""
        return next((s for s in self.steps if isinstance(s, GateStep) and s.name == name), None)

    @property
    def phase_names(self) -> tuple[str, ...]:
        """The phases' names, in order."""
        return tuple(s.name for s in self.steps if isinstance(s, PhaseStep))

    @property
    def gate_names(self) -> tuple[str, ...]:
        """The gates' names, in order."""
        return tuple(s.name for s in self.steps if isinstance(s, GateStep))


