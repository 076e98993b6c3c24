"""ResolvedSpec: lookups, interpolated `with`/`run`, and the frozen JSON round trip."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.spec import ResolvedSpec, load_spec

SPEC = """\
version: 1
name: pilot
seed: 7
model: {path: models/tiny, dtype: bfloat16}
params:
  n: 3
  response: {temperature: 0.4}
phases:
  - name: make
    run: echo ${params.n}
    with:
      count: ${params.n}
      label: "t=${params.response.temperature}"
  - name: qc
    run: echo qc
    env: {N: "${params.n}", GPU: 0}
    retry: {attempts: 2}
  - gate: review
    checks: [qc.rate < 0.05]
    may_set: [response]
"""


@pytest.fixture
def resolved(write: Callable[..., Path]) -> ResolvedSpec:
    """SPEC loaded with one override."""
    return load_spec(write(SPEC), ["response.temperature=0.3"])


def test_frozen_round_trip_equal(resolved: ResolvedSpec) -> None:
    """to_frozen -> JSON -> from_frozen gives an equal ResolvedSpec."""
    frozen = json.loads(json.dumps(resolved.to_frozen()))
    assert ResolvedSpec.from_frozen(frozen) == resolved


def test_frozen_round_trip_same_json(resolved: ResolvedSpec) -> None:
    """Freezing a reloaded spec gives the very same JSON."""
    frozen = json.loads(json.dumps(resolved.to_frozen()))
    assert ResolvedSpec.from_frozen(frozen).to_frozen() == frozen


def test_source_fields(resolved: ResolvedSpec, tmp_path: Path) -> None:
    """source_path is absolute, spec_dir its folder, sha256 that of the bytes."""
    data = (tmp_path / "spec.yaml").read_bytes()
    assert (resolved.source_path, resolved.spec_dir) == (tmp_path / "spec.yaml", tmp_path)
    assert resolved.sha256 == hashlib.sha256(data).hexdigest()


def test_steps_and_names(resolved: ResolvedSpec) -> None:
    """steps keeps order; phase_names lists phases only."""
    assert [s.name for s in resolved.steps] == ["make", "qc", "review"]
    assert resolved.phase_names == ["make", "qc"]


def test_resolved_with_uses_effective_params(resolved: ResolvedSpec) -> None:
    """resolved_with keeps an exact reference's type and uses the overridden params."""
    assert resolved.resolved_with("make") == {"count": 3, "label": "t=0.3"}


def test_resolved_with_explicit_params(resolved: ResolvedSpec) -> None:
    """resolved_with accepts other params (e.g. after an ITERATE decision)."""
    assert resolved.resolved_with("make", {"n": 5, "response": {"temperature": 1}})["count"] == 5


def test_resolved_run_and_env(resolved: ResolvedSpec) -> None:
    """resolved_run refers to each parameter through a quoted variable that resolved_env
    holds; `env:` values are resolved as text."""
    assert resolved.resolved_run("make") == 'echo "${RUNNER_PARAM_N}"'
    assert resolved.resolved_env("make") == {"RUNNER_PARAM_N": "3"}
    assert resolved.resolved_env("qc") == {"N": "3", "GPU": "0"}


def test_gate_lookup_and_defaults(resolved: ResolvedSpec) -> None:
    """gate() finds a gate; iterate_start defaults to the first phase."""
    assert resolved.gate("review").may_set == ["response"]
    assert resolved.iterate_start("review") == "make"


def test_phase_inputs_default_to_earlier(resolved: ResolvedSpec) -> None:
    """Without `inputs`, a phase reads every earlier phase."""
    assert resolved.phase_inputs("qc") == ["make"]


def test_unknown_phase_is_key_error(resolved: ResolvedSpec) -> None:
    """phase() of an unknown name raises KeyError."""
    with pytest.raises(KeyError):
        resolved.phase("review")
