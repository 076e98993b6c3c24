"""Every spec shipped in specs/ (and in tests/cli/data/) validates; the example spec's whole
reviewer flow works from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corehelpers import DATA, SPECS, cli, decide, ok, status

from runner.spec import load_spec

SHIPPED = sorted(SPECS.glob("*.yaml"))
TEST_SPECS = sorted(DATA.glob("*.yaml"))


def test_specs_folder_is_not_empty() -> None:
    """The glob finds the shipped specs (so the parametrized tests below skip none)."""
    assert {p.name for p in SHIPPED} >= {"example_python.yaml", "demo.yaml", "stage1_pilot.yaml"}


@pytest.mark.parametrize("spec", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_spec_validates(spec: Path) -> None:
    """A spec in specs/ loads and validates, its `uses` targets imported."""
    resolved = load_spec(spec)
    assert resolved.spec.name


@pytest.mark.parametrize("spec", TEST_SPECS, ids=[p.name for p in TEST_SPECS])
def test_test_spec_validates(spec: Path) -> None:
    """A spec of these tests (tests/cli/data) validates."""
    assert load_spec(spec).spec.name


def test_retry_on_key_unquoted_validates(tmp_path: Path) -> None:
    """The contract's `retry: {attempts: 3, on: [ValueError]}`, with `on` unquoted, validates."""
    spec = tmp_path / "retry.yaml"
    spec.write_text("version: 1\nname: retry\nphases:\n  - name: a\n    run: 'true'\n"
                    "    retry: {attempts: 3, on: [ValueError]}\n")
    resolved = load_spec(spec)
    assert list(resolved.spec.phases[0].retry.on) == ["ValueError"]


@pytest.mark.slow
def test_example_reviewer_flow(tmp_path: Path) -> None:
    """Example spec: gate fails, ITERATE threshold 0.3 reuses make_items, PROCEED completes."""
    state = tmp_path / "state"
    ok(cli(state, "run", str(SPECS / "example_python.yaml"), "--run-id", "ex"), 3)
    packet = json.loads(ok(cli(state, "gate", "ex", "--json")).stdout)
    assert [c["expr"] for c in packet["checks"] if not c["passed"]] == ["score.pass_rate >= 0.5"]
    decide(state, "ex", "review", "iterate", "--set", "scoring.threshold=0.3")
    ok(cli(state, "resume", "ex"), 3)
    data = status(state, "ex")
    by = {(p["name"], p["iteration"]): p for p in data["phases"]}
    assert data["iteration"] == 2 and data["params"]["scoring"]["threshold"] == 0.3
    assert by[("make_items", 2)]["status"] == "reused" and by[("make_items", 2)]["reused_from"] == 1
    assert by[("score", 2)]["status"] == "succeeded"
    packet = json.loads(ok(cli(state, "gate", "ex", "--json")).stdout)
    assert packet["iteration"] == 2 and all(c["passed"] for c in packet["checks"])
    decide(state, "ex", "review", "proceed", "--packet", packet["packet_sha256"])
    ok(cli(state, "resume", "ex"), 0)
    data = status(state, "ex")
    assert data["status"] == "completed"
    assert [d["decision"] for d in data["decisions"]] == ["iterate", "proceed"]
    assert {(p["name"], p["status"]) for p in data["phases"] if p["iteration"] == 2} == {
        ("make_items", "reused"), ("score", "succeeded"), ("summarize", "succeeded")}


def _demo_with_typos(tmp_path: Path) -> Path:
    """specs/demo.yaml (its paths made absolute), with the issue's two mistakes in it."""
    text = (SPECS / "demo.yaml").read_text().replace("../fixtures/", f"{SPECS.parent}/fixtures/")
    text = text.replace("      temperature: ${params.response.temperature}", "      temperatur: ${params.response.temperature}")
    text = text.replace("      kind: pair\n", "      kind: pairs\n")
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return path


def test_validate_catches_the_issue_demo_typos_with_their_lines(tmp_path: Path) -> None:
    """`temperatur:` in generate_responses and `kind: pairs` in a critic: both found, located."""
    spec = _demo_with_typos(tmp_path)
    proc = ok(cli(tmp_path / "state", "validate", str(spec)), 2)
    lines = (SPECS / "demo.yaml").read_text().splitlines()
    temp = next(n for n, t in enumerate(lines, 1) if t == "      temperature: ${params.response.temperature}")
    kind = next(n for n, t in enumerate(lines, 1) if t == "      kind: pair")
    assert proc.stderr.splitlines() == [
        f"{spec}:{temp}:7: phases[2].with.temperatur: unknown key 'temperatur'; did you mean 'temperature'?",
        f"{spec}:{kind}:13: phases[3].with.kind: expected one of 'instruction' or 'pair', got 'pairs'; "
        "did you mean 'pair'?",
    ]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(("value", "says"), [
    ("-1", "input should be greater than or equal to 0, got -1; it reaches phases[2].with.temperature"),
    ("hot", "'response.temperature' is a number in the spec; got text 'hot'"),
])
def test_a_bad_set_value_is_refused_before_anything_is_written(tmp_path: Path, command: str, value: str,
                                                               says: str) -> None:
    """`--set response.temperature=-1` fails the phase's model, `=hot` the parameter's type:
    validate and run exit 2, one line, and no run folder is made."""
    state = tmp_path / "state"
    proc = ok(cli(state, command, str(SPECS / "demo.yaml"), "--set", f"response.temperature={value}"), 2)
    assert proc.stderr.splitlines() == [f"error: --set: response.temperature: {says}" + (
        "" if value == "-1" else ": a value keeps its parameter's type (declare other types in the spec's param_types)")]
    assert not state.exists()
