"""The registry: every built-in phase has a function and a `with:` model; user models."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from runner.errors import PhaseError
from runner.phases.registry import BUILTIN_OPTIONS, BUILTIN_PHASES, options_model, phase_options


def test_every_builtin_has_an_options_model() -> None:
    """The two tables name the same built-ins, and each options string is a model class."""
    assert set(BUILTIN_OPTIONS) == set(BUILTIN_PHASES)
    for name in BUILTIN_PHASES:
        model = options_model(name)
        assert isinstance(model, type) and issubclass(model, BaseModel), name


def test_phase_options_refuses_at_run_time() -> None:
    """A `with:` its model refuses fails the phase, naming the key (the run-time guard)."""
    with pytest.raises(PhaseError, match=r"with\.confidence_threshold"):
        phase_options("critic_filter", None, {"confidence_threshold": 2.0}, "critic")


def test_phase_options_applies_defaults() -> None:
    """A valid `with:` comes back as the model, defaults filled in."""
    options = phase_options("critic_filter", None, {"kind": "pair"}, "critic")
    assert (options.kind, options.confidence_threshold, options.labels) == ("pair", 0.5, [" A", " B"])


def test_a_function_without_options_has_none() -> None:
    """A user function that declares no model keeps a free `with:` mapping."""
    assert options_model("runner.phases.registry:target_of") is None
