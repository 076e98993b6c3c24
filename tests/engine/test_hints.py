"""The hint of a failed phase: `resume --spec` when the spec caused it, `resume` otherwise."""

from __future__ import annotations

from pathlib import Path

from runner.engine.hints import failure_hint, spec_caused
from runner.errors import PhaseError
from runner.phases.shell import ShellPhaseFailed

SPEC = Path("/specs/demo.yaml")


def test_a_refused_with_value_is_caused_by_the_spec() -> None:
    """A phase refusing a `with:` value is a spec mistake: the hint is `resume --spec FILE`."""
    exc = PhaseError("gen", "unknown key with.temperatur; did you mean 'temperature'?")
    assert spec_caused(exc)
    hint = failure_hint(exc, "r1", SPEC, "generate_responses")
    assert "runner resume r1 --spec /specs/demo.yaml" in hint and "fails the same way" in hint


def test_a_missing_model_is_caused_by_the_spec() -> None:
    """A phase without a model is a spec mistake."""
    assert spec_caused(PhaseError("gen", "no model: set `model: {path: ...}` in the spec"))


def test_an_exception_in_code_gets_plain_resume() -> None:
    """An exception from the phase's code: fix the code, then a plain `runner resume`."""
    exc = ZeroDivisionError("division by zero")
    assert not spec_caused(exc)
    hint = failure_hint(exc, "r1", SPEC, "mypkg.phases:score")
    assert hint.startswith("fix the phase's code (mypkg.phases:score), then `runner resume r1`")


def test_a_phase_error_about_data_gets_plain_resume() -> None:
    """A PhaseError that names no setting (a bad metric from the code) gets a plain resume."""
    exc = PhaseError("score", "return value: metric 'rate' is 'high', not a number")
    assert not spec_caused(exc)
    assert "then `runner resume r1`" in failure_hint(exc, "r1", SPEC, "m:f")


def test_a_failed_shell_command_names_both_ways() -> None:
    """A shell command that failed: fix the script and resume, or fix run:/env: and resume --spec."""
    hint = failure_hint(ShellPhaseFailed("train", "exited with code 1"), "r1", SPEC, None)
    assert "`runner resume r1`" in hint and "--spec /specs/demo.yaml" in hint
