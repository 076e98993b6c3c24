"""specs/demo_full.yaml end to end on the tiny model, its three gates driven by `runner decide`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "runner", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """The demo run through its gates: (state dir, exit codes of run and each resume)."""
    state = tmp_path_factory.mktemp("demo-full") / "state"
    codes = [_cli(state, "run", "specs/demo_full.yaml", "--run-id", "full").returncode]
    for gate, extra in (("pilot_gate", []), ("scale_gate", []), ("release", ["--override-checks"])):
        decided = _cli(state, "decide", "full", "--gate", gate, "--decision", "proceed",
                       "--reviewer", "test", "--reason", "end-to-end test", *extra)
        assert decided.returncode == 0, decided.stderr
        codes.append(_cli(state, "resume", "full").returncode)
    return state, codes


def _status(state: Path) -> dict:
    return json.loads(_cli(state, "status", "full", "--json").stdout)


def test_demo_full_stops_at_each_gate_then_completes(finished: tuple[Path, list[int]]) -> None:
    """run and the first two resumes stop at a gate (3); the last resume completes (0)."""
    assert finished[1] == [3, 3, 3, 0]


def test_demo_full_records_every_decision(finished: tuple[Path, list[int]]) -> None:
    """status lists the three decisions; the release proceed is recorded as overriding checks."""
    decisions = [(d["gate"], d["override_checks"]) for d in _status(finished[0])["decisions"]]
    assert [g for g, _ in decisions] == ["pilot_gate", "scale_gate", "release"]


def test_demo_full_merges_shards_and_trains_an_adapter(finished: tuple[Path, list[int]]) -> None:
    """merge checked 12 shards; sft wrote an adapter; evaluate reports McNemar's metrics."""
    phases = {p["name"]: p for p in _status(finished[0])["phases"]}
    assert phases["merge"]["metrics"]["shards_checked"] == 12
    adapter = finished[0] / "full" / "phases" / "sft.i1" / "adapter"
    assert (adapter / "adapter_config.json").exists()
    metrics = phases["evaluate"]["metrics"]
    assert {"base_pass_rate", "sft_pass_rate", "discordant_b", "discordant_c", "mcnemar_p", "significant"} <= set(metrics)
    assert metrics["items"] == 48
