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


# -- a value keeps its parameter's type ----------------------------------------------------------

TYPED = {"lr": 0.1, "count": 3, "flag": True, "name": "a", "items": [1], "group": {"x": 1}, "unset": None}


@pytest.mark.parametrize(("key", "value"), [
    ("lr", "0.1; touch pwned"), ("lr", True), ("count", 2.5), ("flag", 1), ("name", 3),
    ("items", "1"), ("group", {"x": "one"}), ("group", {"y": 1}),
])
def test_a_value_of_another_type_is_refused(key: str, value: object) -> None:
    """Text for a number, true for a number, 2.5 for a whole number, a scalar for a list..."""
    with pytest.raises(SpecError):
        apply_overrides(TYPED, {key: value})


@pytest.mark.parametrize(("key", "value"), [
    ("lr", 1), ("lr", 0.5), ("count", 4), ("flag", False), ("name", "0.1; x"), ("items", [1, 2]),
    ("group", {"x": 2}), ("unset", "anything"),
])
def test_a_value_of_the_same_type_is_accepted(key: str, value: object) -> None:
    """A whole number for a number widens; a null parameter takes anything."""
    assert apply_overrides(TYPED, {key: value})[key] == value


def test_param_types_declares_other_types(write: Callable[..., Path], one: One) -> None:
    """`param_types: {lr: [number, string]}` lets --set give text; other types stay refused."""
    spec = "version: 1\nname: t\nparams: {lr: 0.1}\nparam_types: {lr: [number, string]}\nphases:\n  - name: a\n    run: 'true'\n"
    assert load_spec(write(spec), ["lr=auto"]).params == {"lr": "auto"}
    assert "takes a number or text (param_types); got a list" in one(spec, ["lr=[1]"]).message


def test_param_types_must_name_a_parameter_and_fit_its_value(problems: Callable[..., list[SpecProblem]]) -> None:
    """A declared path that is no parameter, and a value its declaration does not allow."""
    found = problems("version: 1\nname: t\nparams: {lr: 0.1}\nparam_types: {lt: string, lr: string}\n"
                     "phases:\n  - name: a\n    run: 'true'\n")
    assert [(p.path, p.message.split(";")[0]) for p in found] == [
        ("params.lr", "'lr' takes text (param_types)"), ("param_types.lt", "'lt': unknown parameter")]
