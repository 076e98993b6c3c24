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
