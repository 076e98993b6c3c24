"""`specs/stage1_pilot.yaml`: it validates, and its model path is a parameter."""

from __future__ import annotations

import json

import pytest
from pilotlib import PILOT, ok, runner

pytestmark = pytest.mark.slow

ELSEWHERE = "/somewhere/else/base-model"


def test_stage1_pilot_validates(tmp_path):
    """`runner validate specs/stage1_pilot.yaml --json` says valid, with the gate then the export last."""
    out = json.loads(ok(runner(tmp_path, "validate", str(PILOT), "--json")).stdout)
    assert (out["valid"], out["phases"][-2:]) == (True, ["pilot_qc", "export"])


def test_plan_accepts_model_path_as_a_parameter(tmp_path):
    """`runner plan ... --set model_path=X` is accepted and lists X as an override."""
    out = ok(runner(tmp_path, "plan", str(PILOT), "--set", f"model_path={ELSEWHERE}")).stdout
    assert f"model_path='{ELSEWHERE}'" in out, out


def test_plan_shows_the_resolved_model_path(tmp_path):
    """The plan shows the model the LLM phases will load, resolved from `--set model_path`."""
    out = ok(runner(tmp_path, "plan", str(PILOT), "--set", f"model_path={ELSEWHERE}")).stdout
    shown = [line for line in out.splitlines()
             if ELSEWHERE in line and not line.startswith("overrides:")]
    assert shown, out
