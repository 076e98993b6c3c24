"""Atomic SFT checkpoints: a real SIGKILL mid-write, pruning, verification, RNG round trip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sfthelpers import REPO

from runner.llm.sft.checkpoint import (
    capture_rng,
    clean_leftovers,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)

# Saves step 1 (crash points 1 and 2), then step 2, dying by SIGKILL at crash point 3: after
# every file of step 2 is written and fsync'd, before the rename that makes it visible.
_WRITER = """
import sys, torch
from pathlib import Path
from runner.llm.sft.checkpoint import capture_rng, save_checkpoint
root = Path(sys.argv[1])
for step in (1, 2):
    save_checkpoint(root, step, {"w": torch.full((4, 4), float(step))}, {"lr": 0.1},
                    {"last_epoch": step}, capture_rng(), {"losses": [1.0] * step})
"""


def _save(root: Path, step: int) -> Path:
    return save_checkpoint(root, step, {"w": torch.full((3,), float(step))}, {"s": step},
                           {"e": step}, capture_rng(), {"losses": [0.5] * step})


def _killed_writer(root: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "RUNNER_CRASH_AT": "3"}
    return subprocess.run([sys.executable, "-c", _WRITER, str(root)], cwd=REPO, env=env,
                          capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def killed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoints folder whose writer was SIGKILLed while writing step 2."""
    root = tmp_path_factory.mktemp("killed") / "checkpoints"
    done = _killed_writer(root)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    return root


def test_killed_write_leaves_no_folder_under_its_final_name(killed_root: Path) -> None:
    """After a SIGKILL before the rename, step-000002 does not exist; only a temp folder does."""
    names = sorted(p.name for p in killed_root.iterdir())
    assert "step-000002" not in names and "step-000001" in names
    assert any(n.startswith(".tmp-step-000002-") for n in names)


def test_latest_checkpoint_ignores_the_incomplete_one(killed_root: Path) -> None:
    """The newest complete checkpoint after the kill is step 1, and it loads."""
    latest = latest_checkpoint(killed_root)
    assert latest is not None and latest.name == "step-000001"
    assert load_checkpoint(latest).adapter["w"].eq(1.0).all()


def test_clean_leftovers_removes_the_temp_folder(tmp_path: Path) -> None:
    """Leftover .tmp-* folders of a killed writer are removed at the next start."""
    root = tmp_path / "checkpoints"
    assert _killed_writer(root).returncode == -9
    removed = clean_leftovers(root)
    assert len(removed) == 1 and removed[0].startswith(".tmp-step-000002-")
    assert sorted(p.name for p in root.iterdir()) == ["step-000001"]


def test_only_the_last_two_checkpoints_are_kept(tmp_path: Path) -> None:
    """After saving steps 1..4 with keep=2, only step-000003 and step-000004 remain."""
    for step in range(1, 5):
        _save(tmp_path, step)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000003", "step-000004"]


def test_corrupted_checkpoint_file_is_refused(tmp_path: Path) -> None:
    """A checkpoint file whose bytes no longer match its sha256 fails to load."""
    path = _save(tmp_path, 1)
    data = bytearray((path / "optimizer.pt").read_bytes())
    data[-1] ^= 0xFF
    (path / "optimizer.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(path)


def test_rng_state_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    """Restoring the saved RNG state reproduces the draws that followed the save."""
    torch.manual_seed(5)
    path = _save(tmp_path, 1)
    expected = torch.rand(4)
    restore_rng(load_checkpoint(path).rng)
    assert torch.equal(torch.rand(4), expected)
