"""`${params...}` resolution: exact references keep their type, text is stringified."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runner.errors import SpecError
from runner.spec import resolve_with
from runner.spec.interpolate import shell_command

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


# -- shell commands: values are data, never syntax ---------------------------------------------

INJECT = {"lr": "0.1; touch pwned", "q": "it's \"quoted\" $(touch pwned) `touch pwned` *"}
Q = INJECT["q"]


@pytest.mark.parametrize(("command", "printed"), [
    ("echo lr=${params.lr}", "lr=0.1; touch pwned\n"),
    ('echo "lr=${params.lr}"', "lr=0.1; touch pwned\n"),
    ("echo 'lr=${params.lr}'", "lr=0.1; touch pwned\n"),
    ("printf '%s|' ${params.q} \"${params.q}\" '<${params.q}>'", f"{Q}|{Q}|<{Q}>|"),
])
def test_shell_command_passes_values_as_data(command: str, printed: str, tmp_path: Path) -> None:
    """Whatever a value holds and wherever its reference stands (unquoted, in double or in
    single quotes), bash prints it as one piece of text and runs nothing of it."""
    safe, env = shell_command(command, INJECT)
    out = subprocess.run(["bash", "-c", safe], cwd=tmp_path, env={**os.environ, **env},
                         capture_output=True, text=True, check=True).stdout
    assert out == printed and list(tmp_path.iterdir()) == []


def test_shell_command_names_each_parameter_once() -> None:
    """One variable per parameter path; paths that map to one name get their own."""
    safe, env = shell_command("x ${params.a.b_c} ${params.a_b.c} ${params.a.b_c}", {"a": {"b_c": 1}, "a_b": {"c": 2}})
    assert env == {"RUNNER_PARAM_A_B_C": "1", "RUNNER_PARAM_A_B_C_2": "2"}
    assert safe == 'x "${RUNNER_PARAM_A_B_C}" "${RUNNER_PARAM_A_B_C_2}" "${RUNNER_PARAM_A_B_C}"'
