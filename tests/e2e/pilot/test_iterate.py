"""ITERATE on the pilot through the CLI: what `resume` re-runs, re-uses and re-scores."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pilotlib import EXIT_GATE, instance, log_lines, ok, runner, status

pytestmark = pytest.mark.slow

GATE = "pilot_qc"
CRITICS = ("critic_instructions", "critic_pairs")


@dataclass
class Iterated:
    """A copy of a small run after `decide --decision iterate --set ...` and `resume`."""

    run_dir: Path
    plan: str  # `runner plan --run` between the decision and the resume
    status: dict[str, Any]
    log_before: list[dict[str, Any]]  # log.jsonl lines written before the resume
    resume_log: list[dict[str, Any]]  # log.jsonl lines written by the resume process


def _iterate(small, state_dir: Path, *sets: str) -> Iterated:
    state = small.copy_to(state_dir)
    run_id = small.run_id
    set_args = [a for s in sets for a in ("--set", s)]
    ok(runner(state, "decide", run_id, "--gate", GATE, "--decision", "iterate",
              "--reviewer", "pytest", "--reason", "pilot iterate test", *set_args))
    plan = ok(runner(state, "plan", "--run", run_id)).stdout
    before = log_lines(state, run_id)
    resume = runner(state, "resume", run_id)
    ok(resume, EXIT_GATE)
    return Iterated(state / run_id, plan, status(state, run_id), before,
                    log_lines(state, run_id)[len(before):])


def _records(it: Iterated, phase: str, iteration: int) -> list[dict[str, Any]]:
    path = it.run_dir / "phases" / f"{phase}.i{iteration}" / "records.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _plan_line(plan: str, phase: str) -> str:
    lines = [line for line in plan.splitlines() if re.match(rf"^\s*\w+\s+{phase}:", line)]
    assert len(lines) == 1, plan
    return lines[0].strip()


@pytest.fixture(scope="module")
def temperature(small_run, tmp_path_factory) -> Iterated:
    """ITERATE with response.temperature=0.3 only."""
    return _iterate(small_run, tmp_path_factory.mktemp("temp") / "state", "response.temperature=0.3")


@pytest.fixture(scope="module")
def shared_threshold(small_run, tmp_path_factory) -> Iterated:
    """ITERATE with critic.confidence_threshold=0.9 only, on the demo (both critics read it)."""
    return _iterate(small_run, tmp_path_factory.mktemp("thr") / "state",
                    "critic.confidence_threshold=0.9")


@pytest.fixture(scope="module")
def pair_threshold(small_run_own_thresholds, tmp_path_factory) -> Iterated:
    """ITERATE with critic.confidence_threshold=0.9 only, where only the pair critic reads it."""
    return _iterate(small_run_own_thresholds, tmp_path_factory.mktemp("pthr") / "state",
                    "critic.confidence_threshold=0.9")


def test_plan_names_temperature_as_the_change_of_generate_responses(temperature):
    """`plan --run` says generate_responses runs again because with.temperature changed."""
    line = _plan_line(temperature.plan, "generate_responses")
    assert line.startswith("run") and re.search(r"\bwith\.temperature\b", line), line


def test_temperature_iterate_reuses_the_instruction_phases(temperature):
    """generate_instructions and critic_instructions are reused in iteration 2."""
    got = {n: instance(temperature.status, n, 2)["status"]
           for n in ("generate_instructions", "critic_instructions")}
    assert got == {"generate_instructions": "reused", "critic_instructions": "reused"}


def test_temperature_iterate_reruns_the_response_phases(temperature):
    """generate_responses, critic_pairs and qc run again in iteration 2 and the gate is reached."""
    got = {n: instance(temperature.status, n, 2)["status"]
           for n in ("generate_responses", "critic_pairs", "qc")}
    assert (got, temperature.status["pending_gate"], temperature.status["iteration"]) == (
        {"generate_responses": "succeeded", "critic_pairs": "succeeded", "qc": "succeeded"},
        GATE, 2)


def test_temperature_iterate_samples_responses_at_the_new_temperature(temperature):
    """Every response record of iteration 2 was sampled at temperature 0.3."""
    temps = {r["provenance"]["params"]["temperature"] for r in _records(temperature, "generate_responses", 2)}
    assert temps == {0.3}


def test_threshold_iterate_rescores_both_critics_from_the_cache(shared_threshold):
    """Both critics re-run in iteration 2 with every score a cache hit (none computed)."""
    got = {}
    for name in CRITICS:
        inst = instance(shared_threshold.status, name, 2)
        m = inst["metrics"]
        got[name] = (inst["status"], m["cache_hits"] == m["scored"] > 0, m["cache_misses"])
    assert got == {name: ("succeeded", True, 0) for name in CRITICS}


def test_threshold_iterate_on_the_shared_threshold_loads_no_model(shared_threshold):
    """A threshold-only ITERATE of the demo spec loads no model in the resume process."""
    assert [line for line in shared_threshold.resume_log if line["event"] == "model_loaded"] == []


def test_pair_threshold_iterate_reruns_only_the_pair_critic_and_qc(pair_threshold):
    """Only critic_pairs and qc run in iteration 2; the other phases are reused (the export
    after the gate waits)."""
    got = {p["name"]: p["status"] for p in pair_threshold.status["phases"] if p["iteration"] == 2}
    assert got == {"generate_instructions": "reused", "critic_instructions": "reused",
                   "generate_responses": "reused", "critic_pairs": "succeeded", "qc": "succeeded",
                   "export": "pending"}


def test_pair_threshold_iterate_rescores_from_the_cache(pair_threshold):
    """The re-run pair critic takes every score from the cache: hits == scored, misses == 0."""
    m = instance(pair_threshold.status, "critic_pairs", 2)["metrics"]
    assert (m["cache_hits"], m["cache_misses"]) == (m["scored"], 0) and m["scored"] > 0


def test_pair_threshold_iterate_applies_the_new_threshold(pair_threshold):
    """In iteration 2 the pair critic accepts exactly the records with p(A) >= 0.9."""
    records = _records(pair_threshold, "critic_pairs", 2)
    assert records and all((r["verdict"] == "accept") == (r["p_yes"] >= 0.9) for r in records)


def test_pair_threshold_iterate_loads_no_model(pair_threshold):
    """The resume process, running only critic_pairs and qc, logs no model_loaded."""
    loaded_before = [line for line in pair_threshold.log_before if line["event"] == "model_loaded"]
    assert loaded_before, "the log must show model loads at all for their absence to mean much"
    events = [line["event"] for line in pair_threshold.resume_log]
    assert "phase_started" in events and "model_loaded" not in events, events
