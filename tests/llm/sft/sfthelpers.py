"""Helpers of the SFT tests: real records, the phase driver in a subprocess, shared settings."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
DRIVER = Path(__file__).with_name("driver.py")
TINY_BASE = REPO / "fixtures" / "tiny-base"
sys.path.insert(0, str(REPO / "scripts"))

from tiny_corpus import make_pair  # noqa: E402

__all__ = ["DRIVER", "REPO", "TINY_BASE", "TRAIN_PARAMS", "driver_cmd", "make_records",
           "run_driver"]

# A ~30-step CPU run: small enough for seconds, long enough for several checkpoints.
TRAIN_PARAMS: dict[str, Any] = {
    "source": "pairs", "steps": 30, "batch_size": 4, "max_seq_len": 128,
    "checkpoint_every": 5, "log_every": 1, "learning_rate": 1e-3, "warmup_steps": 3,
}


def make_records(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """`n` instruction/response records; every ninth is marked `keep: false`."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        ins, resp = make_pair(r)
        out.append({"id": f"p{i:03d}", "instruction": ins, "response": resp, "keep": i % 9 != 4})
    return out


def driver_cmd(run_dir: Path, records: Path, params: dict[str, Any]) -> list[str]:
    """The command line that runs the phase once in a fresh process."""
    return [sys.executable, str(DRIVER), str(run_dir), str(records), json.dumps(params)]


def run_driver(run_dir: Path, records: Path, params: dict[str, Any],
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the phase to completion in a subprocess; fail the test if it fails."""
    done = subprocess.run(driver_cmd(run_dir, records, params), capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done
