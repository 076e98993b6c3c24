"""Shared helpers for the spec tests: write a YAML string to a file, collect its problems."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from runner.errors import SpecError, SpecProblem
from runner.spec import load_spec

VALID = """\
version: 1
name: pilot
params:
  count: 3
  response:
    temperature: 0.4
    max_new_tokens: 128
phases:
  - name: make
    run: echo make
  - name: qc
    run: echo qc
  - gate: review
    checks:
      - qc.rate < 0.05
"""


@pytest.fixture
def valid() -> str:
    """A small valid spec (two shell phases and a gate) that tests change one line of."""
    return VALID


@pytest.fixture(autouse=True)
def _restore_imports() -> Iterator[None]:
    """`uses:` imports modules from tmp_path; forget them so tests stay independent."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write dedented YAML text to tmp_path/NAME and return its path."""

    def _write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def problems(write: Callable[..., Path]) -> Callable[..., list[SpecProblem]]:
    """Load a YAML string as a spec and return its problems (failing if it is valid)."""

    def _problems(text: str, overrides: Sequence[str] = ()) -> list[SpecProblem]:
        path = write(text)
        with pytest.raises(SpecError) as info:
            load_spec(path, list(overrides))
        return info.value.problems

    return _problems


@pytest.fixture
def one(problems: Callable[..., list[SpecProblem]]) -> Callable[..., SpecProblem]:
    """The single problem of a spec (failing if there are more or none)."""

    def _one(text: str, overrides: Sequence[str] = ()) -> SpecProblem:
        found = problems(text, overrides)
        assert len(found) == 1, [str(p) for p in found]
        return found[0]

    return _one
