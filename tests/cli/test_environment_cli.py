"""Bad RUNNER_* environment values: one usage line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import environment
from runner.cli.main import main
from runner.errors import UsageError

SPEC = str(Path(__file__).resolve().parents[2] / "specs" / "demo.yaml")


@pytest.mark.parametrize("name", sorted(environment.CHOICES))
def test_run_refuses_a_bad_value_before_writing(name, monkeypatch, tmp_path, capsys):
    """`runner run` with a misspelt value exits 2 with one line naming it; no run folder."""
    monkeypatch.setenv(name, "sometimes")
    state = tmp_path / "state"
    assert main(["run", SPEC, "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{name}='sometimes' is not one of auto" in err[0]
    assert not state.exists() or not any(state.iterdir())


def test_resume_refuses_a_bad_value(monkeypatch, tmp_path, capsys):
    """`runner resume` checks the same variables first (exit 2, before the run id is read)."""
    monkeypatch.setenv("RUNNER_DECODE_COMPILE", "yes")
    assert main(["resume", "nosuchrun", "--state-dir", str(tmp_path)]) == 2
    assert "RUNNER_DECODE_COMPILE='yes'" in capsys.readouterr().err


def test_choices_are_case_and_space_tolerant():
    """' Always ' is accepted, as the phases read it; unset means auto."""
    environment.check({"RUNNER_CRITIC_COMPILE": " Always ", "RUNNER_GENERATION": ""})
    with pytest.raises(UsageError, match="RUNNER_GENERATION='fast'"):
        environment.check({"RUNNER_GENERATION": "fast"})
