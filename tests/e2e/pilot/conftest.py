"""Fixtures of the pilot's end-to-end tests: small runs of the demo through the real CLI.

`small_run` is the demo (with absolute fixture paths, so the spec can live in a temporary
folder outside the repository: its provenance then has no git commit that a commit made while
the tests run could change) at `examples=12, batch_size=6`, stopped at its gate. It is run
once per session with `RUNNER_CRASH_LOG`, and is both the uninterrupted reference of the kill
tests and the starting point that the ITERATE tests copy (a run folder holds no absolute
path of its state dir, so a copy is the same run in another state dir).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pilotlib import EXIT_GATE, demo_copy, ok, runner

SMALL = ("--set", "examples=12", "--set", "batch_size=6")
RUN_ID = "pilot"


@dataclass
class SmallRun:
    """A finished small run: its spec, state dir, run id, crash log and the `run` arguments."""

    spec: Path
    state_dir: Path
    run_id: str
    crash_log: Path
    args: tuple[str, ...]

    def copy_to(self, state_dir: Path) -> Path:
        """Copy the run's folder into `state_dir` (a fresh one); return `state_dir`."""
        shutil.copytree(self.state_dir / self.run_id, state_dir / self.run_id)
        return state_dir


def _small_run(root: Path, shared_threshold: bool) -> SmallRun:
    spec = demo_copy(root / "spec" / "demo.yaml", shared_threshold=shared_threshold)
    state, log = root / "state", root / "crash.log"
    args = ("run", str(spec), "--run-id", RUN_ID, *SMALL)
    ok(runner(state, *args, RUNNER_CRASH_LOG=str(log)), EXIT_GATE)
    return SmallRun(spec, state, RUN_ID, log, args)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> SmallRun:
    """The small demo, run uninterrupted to its gate (crash points logged)."""
    return _small_run(tmp_path_factory.mktemp("small"), shared_threshold=True)


@pytest.fixture(scope="session")
def small_run_own_thresholds(tmp_path_factory: pytest.TempPathFactory) -> SmallRun:
    """The same, but `critic.confidence_threshold` feeds only the pair critic."""
    return _small_run(tmp_path_factory.mktemp("small-own"), shared_threshold=False)
