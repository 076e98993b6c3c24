"""Shape problems (pydantic) located in the file: unknown keys, missing keys, wrong types."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runner.errors import SpecError, SpecProblem
from runner.spec import load_spec

One = Callable[..., SpecProblem]
Many = Callable[..., list[SpecProblem]]


def test_unknown_top_level_key_did_you_mean(one: One, valid: str) -> None:
    """A misspelt top-level key is located at the key with did-you-mean."""
    p = one(valid.replace("name: pilot", "name: pilot\nsed: 3"))
    assert (p.line, p.col, p.path) == (3, 1, "sed")
    assert p.message == "unknown key 'sed'; did you mean 'seed'?"


def test_unknown_phase_key_did_you_mean(one: One, valid: str) -> None:
    """A misspelt key inside a phase suggests the phase's key."""
    p = one(valid.replace("    run: echo qc", "    run: echo qc\n    inptus: [make]"))
    assert (p.line, p.col, p.path) == (13, 5, "phases[1].inptus")
    assert "did you mean 'inputs'?" in p.message


def test_unknown_gate_key_did_you_mean(one: One, valid: str) -> None:
    """A misspelt key inside a gate suggests the gate's key."""
    p = one(valid.replace("  - gate: review", "  - gate: review\n    iterate_form: make"))
    assert (p.line, p.col, p.path) == (14, 5, "phases[2].iterate_form")
    assert "did you mean 'iterate_from'?" in p.message


def test_unknown_model_key_did_you_mean(one: One, valid: str) -> None:
    """A misspelt key inside `model` suggests the model's key."""
    p = one(valid.replace("params:", "model:\n  path: m\n  dtyp: bfloat16\nparams:"))
    assert (p.line, p.col, p.path) == (5, 3, "model.dtyp")
    assert p.message == "unknown key 'dtyp'; did you mean 'dtype'?"


def test_unknown_retry_key_did_you_mean(one: One, valid: str) -> None:
    """A misspelt key inside a phase's `retry` suggests the retry key."""
    p = one(valid.replace("    run: echo make", "    run: echo make\n    retry:\n      attempts: 2\n      backof_s: 1"))
    assert (p.line, p.col, p.path) == (13, 7, "phases[0].retry.backof_s")
    assert "did you mean 'backoff_s'?" in p.message


def test_unknown_key_without_close_match_lists_allowed(one: One, valid: str) -> None:
    """An unknown key with no close match lists the keys allowed there."""
    p = one(valid.replace("name: pilot", "name: pilot\nbudget:\n  zzz: 1"))
    assert p.path == "budget.zzz"
    assert "allowed here: gpu_hour_usd, max_usd" in p.message


def test_missing_key_located_at_parent_mapping(one: One, valid: str) -> None:
    """A phase without `name` is reported at the phase's mapping."""
    p = one(valid.replace("  - name: make\n", "  - description: no name\n"))
    assert (p.line, p.col, p.path) == (9, 5, "phases[0].name")
    assert p.message == "missing required key 'name'; add it"


def test_missing_top_level_key(one: One, valid: str) -> None:
    """A spec without `name` is reported at the top mapping."""
    p = one(valid.replace("name: pilot\n", ""))
    assert (p.line, p.col, p.path) == (1, 1, "name")


def test_wrong_type_located_at_value(one: One, valid: str) -> None:
    """A value of the wrong type is located at the value and says what was expected."""
    p = one(valid.replace("name: pilot", "name: pilot\nseed: many"))
    assert (p.line, p.col, p.path) == (3, 7, "seed")
    assert p.message == "expected a whole number, got 'many'"


def test_unsupported_version(one: One, valid: str) -> None:
    """Version 2 is refused, saying which version is supported."""
    p = one(valid.replace("version: 1", "version: 2"))
    assert (p.line, p.col, p.path) == (1, 10, "version")
    assert "reads version 1" in p.message


def test_bad_name(one: One, valid: str) -> None:
    """A name with a space is refused with the allowed characters."""
    p = one(valid.replace("name: pilot", "name: my pilot"))
    assert (p.line, p.path) == (2, "name")
    assert "letters, digits, '-' and '_'" in p.message


def test_empty_phases(one: One) -> None:
    """An empty phase list is refused."""
    p = one("version: 1\nname: x\nphases: []\n")
    assert (p.line, p.path) == (3, "phases")


def test_literal_did_you_mean(one: One, valid: str) -> None:
    """A wrong `device` value lists the choices and suggests the closest one."""
    p = one(valid.replace("params:", "model:\n  path: m\n  device: cdua\nparams:"))
    assert (p.line, p.col, p.path) == (5, 11, "model.device")
    assert "did you mean 'cuda'?" in p.message


def test_non_mapping_top_level(one: One) -> None:
    """A top level that is a list is one problem at 1:1."""
    p = one("- a\n- b\n")
    assert (p.line, p.col) == (1, 1)
    assert "must be a mapping" in p.message


def test_missing_file(tmp_path: Path) -> None:
    """A file that does not exist is one problem at 1:1 naming the file as given."""
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.yaml")
    (p,) = info.value.problems
    assert (p.file, p.line, p.col) == (str(tmp_path / "nope.yaml"), 1, 1)


def test_file_as_typed(write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """FILE in a problem is the path exactly as the user typed it."""
    write("version: 3\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        load_spec("./spec.yaml")
    assert {p.file for p in info.value.problems} == {"./spec.yaml"}


def test_several_mistakes_at_once_sorted(problems: Many, valid: str) -> None:
    """Mistakes in different places are all reported, sorted by line."""
    text = (valid.replace("version: 1", "version: 2")
            .replace("    run: echo qc", "    run: echo qc\n    inptus: [make]")
            .replace("qc.rate < 0.05", "qc.rate <> 1"))
    found = problems(text)
    assert [(p.line, p.path) for p in found] == [
        (1, "version"), (13, "phases[1].inptus"), (16, "phases[2].checks[0]"),
    ]


def test_non_text_key_reported_once(one: One, valid: str) -> None:
    """A number used as a params key is one problem at the key, asking to quote it."""
    p = one(valid.replace("  count: 3", "  1: 3"))
    assert (p.line, p.col, p.path) == (4, 3, "params[1]")
    assert "must be text" in p.message


def test_problems_from_validation_any_model(tmp_path: Path) -> None:
    """problems_from_validation locates errors of another model (a decision file) too."""
    from pydantic import BaseModel, ConfigDict, ValidationError

    from runner.spec import problems_from_validation
    from runner.spec.yaml_marks import load_with_marks

    class Decision(BaseModel):
        model_config = ConfigDict(extra="forbid")
        gate: str
        reason: str

    data, marks = load_with_marks("gate: g\nreasn: ok\n", "d.yaml")
    with pytest.raises(ValidationError) as info:
        Decision.model_validate(data)
    found = [str(p) for p in problems_from_validation(info.value, marks, "d.yaml", Decision)]
    assert found == ["d.yaml:1:1: reason: missing required key 'reason'; add it",
                     "d.yaml:2:1: reasn: unknown key 'reasn'; did you mean 'reason'?"]
