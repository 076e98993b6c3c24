"""Helpers of the real-model tests (imported by name: conftest modules are not importable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
EXIT_GATE = 3


def cli(state: Path, *args: str, timeout: int = 3600) -> subprocess.CompletedProcess[str]:
    """`python -m runner ARGS --state-dir STATE` from the repository root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    return subprocess.run([sys.executable, "-m", "runner", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def packet(state: Path, run_id: str) -> dict[str, Any]:
    """The pending gate's JSON packet."""
    done = cli(state, "gate", run_id, "--json")
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def checks(pk: dict[str, Any]) -> dict[str, tuple[float | None, bool]]:
    """expr -> (value, passed) of a packet's checks."""
    return {c["expr"]: (c["value"], c["passed"]) for c in pk["checks"]}
