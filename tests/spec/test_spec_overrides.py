"""`--set KEY=VALUE`: YAML-typed values, refusal of unknown keys, and the effective params."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runner.errors import SpecError, SpecProblem
from runner.spec import apply_overrides, load_spec, parse_set_args

One = Callable[..., SpecProblem]
PARAMS = {"response": {"temperature": 0.4, "max_new_tokens": 128}, "count": 3}


def test_set_float() -> None:
    """`0.3` is parsed as a float."""
    assert parse_set_args(["response.temperature=0.3"]) == {"response.temperature": 0.3}


def test_set_list() -> None:
    """`[1,2]` is parsed as a list."""
    assert parse_set_args(["count=[1,2]"]) == {"count": [1, 2]}


def test_set_quoted_string() -> None:
    """`'0.3'` is parsed as the string 0.3."""
    assert parse_set_args(["count='0.3'"]) == {"count": "0.3"}


def test_set_value_may_contain_equals() -> None:
    """Only the first `=` separates KEY from VALUE."""
    assert parse_set_args(["count=a=b"]) == {"count": "a=b"}


def test_set_without_equals() -> None:
    """An item without `=` is refused as `--set`, with the expected form."""
    with pytest.raises(SpecError) as info:
        parse_set_args(["response.temperature"])
    (p,) = info.value.problems
    assert (p.file, p.line, p.col) == ("--set", 0, 0)
    assert "is not KEY=VALUE" in p.message


def test_unknown_key_refused_with_did_you_mean() -> None:
    """An unknown KEY is refused, printing as `--set: key: unknown parameter; did you mean`."""
    with pytest.raises(SpecError) as info:
        apply_overrides(PARAMS, {"response.temprature": 0.3})
    (p,) = info.value.problems
    assert str(p) == "--set: response.temprature: unknown parameter; did you mean 'response.temperature'?"


def test_apply_does_not_mutate() -> None:
    """apply_overrides returns a new mapping and leaves its input alone."""
    before = {"response": {"temperature": 0.4}}
    after = apply_overrides(before, {"response.temperature": 0.3})
    assert (before, after) == ({"response": {"temperature": 0.4}}, {"response": {"temperature": 0.3}})


def test_group_replaced_by_scalar_refused() -> None:
    """Setting a whole group to a scalar is refused (it would drop every key below it)."""
    with pytest.raises(SpecError) as info:
        apply_overrides(PARAMS, {"response": 0.3})
    assert "is a group of parameters" in info.value.problems[0].message


def test_load_spec_applies_overrides(write: Callable[..., Path], valid: str) -> None:
    """load_spec's params are the spec's with overrides applied; the spec's own are kept."""
    resolved = load_spec(write(valid), ["response.temperature=0.3"])
    assert resolved.params["response"]["temperature"] == 0.3
    assert resolved.spec.params["response"]["temperature"] == 0.4
    assert resolved.overrides == {"response.temperature": 0.3}


def test_load_spec_reports_set_with_file_problems(problems: Callable[..., list[SpecProblem]], valid: str) -> None:
    """A bad `--set` and a bad spec line are reported together, `--set` first."""
    found = problems(valid.replace("version: 1", "version: 9"), ["respons.temperature=1"])
    assert next((p.file, p.path) for p in found) == ("--set", "respons.temperature")
    assert found[1].path == "version"
