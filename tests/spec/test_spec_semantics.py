"""Cross-reference problems: names, `uses`, checks, iterate_from, may_set, inputs, ${...}."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runner.errors import SpecError, SpecProblem
from runner.spec import PhaseSpec, load_spec

One = Callable[..., SpecProblem]


def test_duplicate_phase_name(one: One, valid: str) -> None:
    """A second phase with the same name is reported at its name, naming the first line."""
    p = one(valid.replace("  - name: qc\n", "  - name: make\n").replace("qc.rate", "make.rate"))
    assert (p.line, p.col, p.path) == (11, 11, "phases[1].name")
    assert "duplicate phase name 'make' at line 9" in p.message


def test_duplicate_gate_name(one: One, valid: str) -> None:
    """A second gate with the same name is reported at its name."""
    p = one(valid + "  - gate: review\n")
    assert (p.line, p.col, p.path) == (16, 11, "phases[3].gate")
    assert "duplicate gate name 'review' at line 13" in p.message


def test_gate_named_like_phase(one: One, valid: str) -> None:
    """A gate may not share a phase's name."""
    p = one(valid + "  - gate: make\n")
    assert (p.line, p.path) == (16, "phases[3].gate")
    assert "gate 'make' has the same name as the phase at line 9" in p.message


def test_both_uses_and_run(one: One, valid: str, write: Callable[..., Path]) -> None:
    """A phase with `uses` and `run` is reported at the second of the two keys."""
    write("def f(ctx):\n    return {}\n", "both_mod.py")
    p = one(valid.replace("    run: echo qc", "    run: echo qc\n    uses: both_mod:f"))
    assert (p.line, p.col, p.path) == (13, 5, "phases[1].uses")
    assert "has both 'uses' and 'run'; keep one" in p.message


def test_neither_uses_nor_run(one: One, valid: str) -> None:
    """A phase without `uses` and `run` is reported at the phase."""
    p = one(valid.replace("    run: echo qc\n", "    description: nothing to do\n"))
    assert (p.line, p.col, p.path) == (11, 5, "phases[1]")
    assert "neither 'uses'" in p.message


def test_uses_module_missing(one: One, valid: str) -> None:
    """A `uses` whose module does not import is reported at the value with the reason."""
    p = one(valid.replace("    run: echo qc", "    uses: no_such_module_xyz:f"))
    assert (p.line, p.col, p.path) == (12, 11, "phases[1].uses")
    assert "cannot import module 'no_such_module_xyz'" in p.message


def test_uses_not_callable(one: One, valid: str, write: Callable[..., Path]) -> None:
    """A `uses` that names something not callable is refused."""
    write("LIMIT = 3\n", "consts_mod.py")
    p = one(valid.replace("    run: echo qc", "    uses: consts_mod:LIMIT"))
    assert (p.line, p.path) == (12, "phases[1].uses")
    assert "not callable" in p.message


def test_python_phase_from_spec_folder(write: Callable[..., Path], valid: str) -> None:
    """A valid spec whose phase is `module:function` from a module next to the spec loads."""
    write("def make(ctx):\n    return {'n': 1}\n", "my_phases.py")
    path = write(valid.replace("    run: echo make", "    uses: my_phases:make"))
    resolved = load_spec(path)
    assert resolved.phase("make") == PhaseSpec(name="make", uses="my_phases:make")


def test_check_does_not_parse(one: One, valid: str) -> None:
    """A check that does not parse says the expected form."""
    p = one(valid.replace("qc.rate < 0.05", "qc.rate is small"))
    assert (p.line, p.col, p.path) == (15, 9, "phases[2].checks[0]")
    assert "PHASE.METRIC OP NUMBER" in p.message


def test_check_unknown_phase_did_you_mean(one: One, valid: str) -> None:
    """A check naming no phase suggests the closest earlier phase."""
    p = one(valid.replace("qc.rate < 0.05", "qcc.rate < 0.05"))
    assert (p.line, p.path) == (15, "phases[2].checks[0]")
    assert "no phase named 'qcc'; did you mean 'qc'?" in p.message


def test_check_phase_after_gate(one: One, valid: str) -> None:
    """A check may not read a phase that runs after the gate."""
    p = one(valid.replace("qc.rate < 0.05", "late.rate < 0.05") + "  - name: late\n    run: echo\n")
    assert (p.line, p.path) == (15, "phases[2].checks[0]")
    assert "phase 'late' does not run before gate 'review'" in p.message


def test_check_names_gate(one: One, valid: str) -> None:
    """A check may not name a gate."""
    p = one(valid.replace("qc.rate < 0.05", "review.rate < 0.05"))
    assert "'review' is a gate, not a phase" in p.message


def test_iterate_from_not_before_gate(one: One, valid: str) -> None:
    """`iterate_from` must name a phase before the gate."""
    p = one(valid.replace("    checks:", "    iterate_from: mkae\n    checks:"))
    assert (p.line, p.col, p.path) == (14, 19, "phases[2].iterate_from")
    assert "no phase named 'mkae'; did you mean 'make'?" in p.message


def test_may_set_unknown_param(one: One, valid: str) -> None:
    """A `may_set` path not in params is refused with did-you-mean."""
    p = one(valid.replace("    checks:", "    may_set: [response, response.temprature]\n    checks:"))
    assert (p.line, p.col, p.path) == (14, 25, "phases[2].may_set[1]")
    assert "did you mean 'response.temperature'?" in p.message


def test_inputs_not_earlier_phase(one: One, valid: str) -> None:
    """An `inputs` name must be an earlier phase."""
    p = one(valid.replace("    run: echo make", "    run: echo make\n    inputs: [qc]"))
    assert (p.line, p.col, p.path) == (11, 14, "phases[0].inputs[0]")
    assert "phase 'qc' does not run before phase 'make'" in p.message


def test_reference_unknown_param_in_with(one: One, valid: str) -> None:
    """A `${params.x}` to an unknown parameter deep in `with` suggests an existing path."""
    p = one(valid.replace("    run: echo make", "    run: echo make\n    with:\n      a:\n        - {t: '${params.response.temp}'}"))
    assert (p.line, p.path) == (13, "phases[0].with.a[0].t")
    assert "did you mean 'response.temperature'?" in p.message


def test_reference_unknown_param_in_run(one: One, valid: str) -> None:
    """A bad `${params...}` inside a shell command is reported at `run`."""
    p = one(valid.replace("run: echo qc", "run: echo ${params.cuont}"))
    assert (p.line, p.col, p.path) == (12, 10, "phases[1].run")
    assert "did you mean 'count'?" in p.message


def test_reference_not_params_in_env(one: One, valid: str) -> None:
    """A `${HOME}` in `env` is refused with the `$${` escape."""
    p = one(valid.replace("    run: echo qc", "    run: echo qc\n    env:\n      WHERE: ${HOME}/x"))
    assert (p.line, p.path) == (14, "phases[1].env.WHERE")
    assert "'$${'" in p.message


def test_unterminated_reference(one: One, valid: str) -> None:
    """A `${` without `}` is refused."""
    p = one(valid.replace("run: echo qc", "run: echo ${params.count"))
    assert (p.line, p.path) == (12, "phases[1].run")
    assert "unterminated '${'" in p.message


def test_escaped_reference_is_fine(write: Callable[..., Path], valid: str) -> None:
    """`$${HOME}` passes validation and resolves to a literal `${HOME}`."""
    resolved = load_spec(write(valid.replace("run: echo qc", "run: echo $${HOME}")))
    assert resolved.resolved_run("qc") == "echo ${HOME}"


def test_param_key_with_dot(one: One, valid: str) -> None:
    """A parameter name with a '.' is refused at the key: paths could not address it."""
    p = one(valid.replace("  count: 3", "  a.b: 3"))
    assert (p.line, p.col) == (4, 3)
    assert "may not contain '.'" in p.message


def test_missing_local_model_folder_is_located(tmp_path):
    """A local model.path that does not exist is reported at its line, with the resolved path."""
    spec = tmp_path / "m.yaml"
    spec.write_text("version: 1\nname: m\nmodel: {path: ./no-such-model}\nphases:\n  - name: a\n    run: 'true'\n")
    with pytest.raises(SpecError) as err:
        load_spec(str(spec))
    assert str(err.value).startswith(f"{spec}:3:15: model.path: model folder './no-such-model' does not exist")


def test_folder_without_config_is_not_a_model(tmp_path):
    """A model.path folder without config.json is refused before anything runs."""
    (tmp_path / "empty").mkdir()
    spec = tmp_path / "m.yaml"
    spec.write_text("version: 1\nname: m\nmodel: {path: empty}\nphases:\n  - name: a\n    run: 'true'\n")
    with pytest.raises(SpecError, match=r"without config\.json"):
        load_spec(str(spec))


def test_may_set_bounds_validate(write: Callable[..., Path], valid: str) -> None:
    """The contract's mapping form of `may_set` loads, bounds by path."""
    text = valid.replace("    checks:", "    may_set: {response.temperature: {min: 0.1, max: 1.0}, count: {choices: [3, 5]}, response: {}}\n    checks:")
    gate = load_spec(write(text)).gate("review")
    assert (gate.bounds["response.temperature"].max, gate.bounds["count"].choices, gate.bounds["response"].unbounded) == (1.0, [3, 5], True)


def test_may_set_bounds_problems(problems: Callable[..., list[SpecProblem]], valid: str) -> None:
    """An unknown path, min on a parameter that is no number, bounds on a group, max < min."""
    text = valid.replace("params:\n", "params:\n  style: short\n").replace(
        "    checks:", "    may_set:\n      respons.x: {}\n      style: {min: 1}\n      response: {max: 2}\n"
        "      count: {min: 2, max: 1}\n    checks:")
    found = {p.path: p.message for p in problems(text)}
    assert "did you mean" in found["phases[2].may_set.respons.x"]
    assert "bounds a number" in found["phases[2].may_set.style.min"]
    assert "is a group of parameters" in found["phases[2].may_set.response"]
    assert found["phases[2].may_set.count.max"] == "max 1.0 is below min 2.0"
