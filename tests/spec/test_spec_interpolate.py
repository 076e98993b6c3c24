"""`${params...}` resolution: exact references keep their type, text is stringified."""

from __future__ import annotations

import pytest

from runner.errors import SpecError
from runner.spec import resolve_with

PARAMS = {"n": 3, "t": 0.5, "tags": ["a", "b"], "deep": {"on": True}}


def test_exact_reference_keeps_int() -> None:
    """A value that is exactly one reference keeps the parameter's type."""
    assert resolve_with("${params.n}", PARAMS) == 3


def test_exact_reference_keeps_list() -> None:
    """A list parameter stays a list (and a copy, not the params' own)."""
    value = resolve_with("${params.tags}", PARAMS)
    assert value == ["a", "b"] and value is not PARAMS["tags"]


def test_reference_inside_text_is_stringified() -> None:
    """A reference inside longer text becomes str() of the value."""
    assert resolve_with("n=${params.n}, t=${params.t}, on=${params.deep.on}", PARAMS) == "n=3, t=0.5, on=True"


def test_nested_dicts_and_lists() -> None:
    """Resolution walks through mappings and lists."""
    value = {"a": [{"b": "${params.t}"}, "x"], "c": 1}
    assert resolve_with(value, PARAMS) == {"a": [{"b": 0.5}, "x"], "c": 1}


def test_escape_is_literal() -> None:
    """`$${` is a literal `${`, and an escaped reference stays text."""
    assert resolve_with("$${params.n} and ${params.n}", PARAMS) == "${params.n} and 3"


def test_unknown_reference_raises() -> None:
    """A reference to a missing parameter raises SpecError naming it."""
    with pytest.raises(SpecError) as info:
        resolve_with("${params.m}", PARAMS)
    assert info.value.problems[0].path == "m"
