"""kill -9 in the middle of SFT, then resume: the same adapter as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from sfthelpers import REPO, TRAIN_PARAMS, driver_cmd, run_driver

ADAPTER = Path("phases/sft.i1/adapter/adapter_model.safetensors")
CHECKPOINTS = Path("phases/sft.i1/checkpoints")


def _kill_after_first_checkpoint(run_dir: Path, records: Path) -> int:
    """Start the phase, SIGKILL it once a checkpoint folder exists; the step it had reached."""
    env = {**os.environ, "SFT_TEST_STEP_DELAY": "0.05"}  # timing only: room to kill mid-run
    proc = subprocess.Popen(driver_cmd(run_dir, records, TRAIN_PARAMS), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            folder = run_dir / CHECKPOINTS
            if folder.is_dir() and any(p.name.startswith("step-") for p in folder.iterdir()):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the phase ended before it could be killed"
    steps = [json.loads(x)["step"] for x in (run_dir / "log.jsonl").read_text().splitlines()
             if '"sft_step"' in x]
    return max(steps)


@pytest.mark.slow
def test_kill_and_resume_ends_with_the_uninterrupted_adapter(tmp_path: Path,
                                                             records_file: Path) -> None:
    """SIGKILL after the first checkpoint, resume: adapter bytes equal an uninterrupted run's."""
    run_driver(tmp_path / "straight", records_file, TRAIN_PARAMS)
    killed_at = _kill_after_first_checkpoint(tmp_path / "killed", records_file)
    assert 5 <= killed_at < TRAIN_PARAMS["steps"]
    assert not (tmp_path / "killed" / ADAPTER).exists()
    run_driver(tmp_path / "killed", records_file, TRAIN_PARAMS)
    log = [json.loads(x) for x in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    resumed = [e["resumed_from_step"] for e in log if e["event"] == "sft_started"]
    assert resumed[0] == 0 and resumed[1] >= 5  # the second start really resumed
    straight = (tmp_path / "straight" / ADAPTER).read_bytes()
    again = (tmp_path / "killed" / ADAPTER).read_bytes()
    a, b = load_file(tmp_path / "straight" / ADAPTER), load_file(tmp_path / "killed" / ADAPTER)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert straight == again
