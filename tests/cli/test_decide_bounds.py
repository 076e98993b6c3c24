"""Typed, bounded decisions end to end: `--set` keeps a parameter's type, stays in the gate's
bounds, and a value a decision sets reaches a shell phase as text, never as a command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from corehelpers import DATA, cli, copy_run, decide, ok, status, tree_digest

RUN = "bd"


@pytest.fixture(scope="session")
def bounded_at_gate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with data/bounded.yaml and a state dir whose run `bd` waits at gate `g`."""
    root = tmp_path_factory.mktemp("bounded")
    shutil.copy(DATA / "bounded.yaml", root / "bounded.yaml")
    ok(cli(root / "state", "run", str(root / "bounded.yaml"), "--run-id", RUN), 3)
    return root


@pytest.fixture
def at_gate(bounded_at_gate: Path, tmp_path: Path) -> Path:
    """This test's own copy of the spec folder and the run (the shell phase runs in it)."""
    shutil.copy(bounded_at_gate / "bounded.yaml", tmp_path / "bounded.yaml")
    copy_run(bounded_at_gate / "state", tmp_path / "state")
    # The frozen spec names the session folder as the spec's; the copy runs in its own.
    frozen = tmp_path / "state" / RUN / "spec.json"
    frozen.write_text(frozen.read_text().replace(str(bounded_at_gate), str(tmp_path)))
    return tmp_path


def _refused(root: Path, *sets: str) -> str:
    """`decide iterate --set ...`: exit 2, one line, no file of the state dir changed."""
    state = root / "state"
    before = tree_digest(state)
    args = [a for s in sets for a in ("--set", s)]
    proc = cli(state, "decide", RUN, "--gate", "g", "--decision", "iterate", "--reviewer", "t",
               "--reason", "r", *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert tree_digest(state) == before
    return proc.stderr


def test_the_issue_injection_is_refused_at_decide(at_gate: Path) -> None:
    """`--set 'lr="0.1; touch pwned"'` turns a number into text: refused, nothing written."""
    line = _refused(at_gate, 'lr="0.1; touch pwned"')
    assert "'lr' is a number in the spec; got text '0.1; touch pwned'" in line


def test_a_string_for_a_float_is_refused(at_gate: Path) -> None:
    """A quoted number is text, not a number."""
    assert "got text '0.5'" in _refused(at_gate, "temperature='0.5'")


def test_above_max_is_refused(at_gate: Path) -> None:
    """temperature is bounded by max 1.0."""
    assert "above the gate's max 1" in _refused(at_gate, "temperature=1.5")


def test_below_min_is_refused(at_gate: Path) -> None:
    """temperature is bounded by min 0.1."""
    assert "below the gate's min 0.1" in _refused(at_gate, "temperature=0.05")


def test_outside_choices_is_refused(at_gate: Path) -> None:
    """style is one of short or long."""
    assert "not one of the gate's choices ['short', 'long']" in _refused(at_gate, "style=medium")


def test_a_declared_type_widens_what_may_be_set(at_gate: Path) -> None:
    """layers is declared [list, string]: text is accepted, a number is not."""
    assert "'layers' takes a list or text (param_types); got 3" in _refused(at_gate, "layers=3")
    decide(at_gate / "state", RUN, "g", "iterate", "--set", "layers=all")
    assert status(at_gate / "state", RUN)["decisions"][0]["set"] == {"layers": "all"}


def test_values_inside_the_bounds_are_accepted(at_gate: Path) -> None:
    """Inside min/max and among the choices: recorded."""
    decide(at_gate / "state", RUN, "g", "iterate", "--set", "temperature=0.8", "--set", "style=long",
           "--set", "lr=1")
    assert status(at_gate / "state", RUN)["decisions"][0]["set"] == {"temperature": 0.8, "style": "long", "lr": 1}


def test_a_decision_file_out_of_bounds_is_refused(at_gate: Path) -> None:
    """Decision files go through the same checks."""
    path = at_gate / "decision.yaml"
    path.write_text("gate: g\ndecision: iterate\nreviewer: t\nreason: r\nset: {temperature: 2.0}\n")
    before = tree_digest(at_gate / "state")
    proc = cli(at_gate / "state", "decide", RUN, "--file", str(path))
    assert proc.returncode == 2 and "above the gate's max 1" in proc.stderr
    assert tree_digest(at_gate / "state") == before


def test_text_a_decision_sets_reaches_the_shell_as_data(at_gate: Path) -> None:
    """A text parameter set to `0.1; touch pwned`: the resumed shell phase prints the literal
    text (unquoted, in double and in single quotes) and no `pwned` file appears."""
    decide(at_gate / "state", RUN, "g", "iterate", "--set", "note=0.1; touch pwned $(touch pwned2)")
    ok(cli(at_gate / "state", "resume", RUN), 3)
    decide(at_gate / "state", RUN, "g", "proceed")
    ok(cli(at_gate / "state", "resume", RUN), 0)
    out = (at_gate / "state" / RUN / "phases" / "train.i2" / "stdout.log").read_text()
    value = "0.1; touch pwned $(touch pwned2)"
    assert out == f"lr=0.1 note={value} quoted={value} single={value}\n"
    assert not list(at_gate.rglob("pwned*"))


def test_a_value_the_phase_model_refuses_is_refused_at_decide(tmp_path: Path) -> None:
    """ITERATE with a number the next phase's `with:` model refuses (temperature -1, of the
    right type and not bounded by the gate): refused at decide, as validate would have."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "version: 1\nname: m\nparams: {temperature: 0.5}\nphases:\n"
        "  - name: first\n    run: echo first\n  - gate: g\n    may_set: [temperature]\n"
        "  - name: critic\n    uses: critic_filter\n    with: {source: first, confidence_threshold: '${params.temperature}'}\n")
    state = tmp_path / "state"
    ok(cli(state, "run", str(spec), "--run-id", RUN), 3)
    before = tree_digest(state)
    proc = cli(state, "decide", RUN, "--gate", "g", "--decision", "iterate", "--reviewer", "t",
               "--reason", "r", "--set", "temperature=1.5")
    assert proc.returncode == 2 and "phases[2].with.confidence_threshold" in proc.stderr
    assert "less than or equal to 1" in proc.stderr and tree_digest(state) == before
