"""Helpers of the shard executor tests: run the CLI on a variant of data/sharded.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[3]


def cli(state: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python -m runner ARGS --state-dir STATE` as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "runner", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def spec_variant(tmp_path: Path, shards: str, extra_params: str = "") -> Path:
    """data/sharded.yaml with another `shards:` line, written beside a copy of its module."""
    text = (DATA / "sharded.yaml").read_text()
    text = text.replace("shards: {count: 3, executor: local, workers: 1}", f"shards: {shards}")
    if extra_params:
        text = text.replace("params:\n", f"params:\n{extra_params}")
    folder = tmp_path / "spec"
    folder.mkdir(exist_ok=True)
    (folder / "shard_phases.py").write_text((DATA / "shard_phases.py").read_text())
    path = folder / "sharded.yaml"
    path.write_text(text)
    return path


def records(state: Path, run_id: str, phase: str) -> bytes:
    """The joined records file of a phase's first instance."""
    return (state / run_id / "phases" / f"{phase}.i1" / "records.jsonl").read_bytes()


def status(state: Path, run_id: str) -> dict:
    """`runner status --json`."""
    out = cli(state, "status", run_id, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted in-process run of the 3-shard spec (state dir; run id `ref`)."""
    tmp = tmp_path_factory.mktemp("shards-ref")
    out = cli(tmp / "state", "run", str(spec_variant(tmp, "{count: 3, executor: local, workers: 1}")),
              "--run-id", "ref")
    assert out.returncode == 0, out.stderr[-2000:]
    return tmp / "state"
