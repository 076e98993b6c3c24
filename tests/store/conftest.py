"""Helpers for the store tests: run Python code in a real subprocess that imports `runner`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # tests run without installing the package
    sys.path.insert(0, str(REPO_ROOT))


def make_child_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: this repo importable, no inherited failpoints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_CRASH_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


PyRunner = Callable[..., subprocess.CompletedProcess[str]]
EnvMaker = Callable[..., dict[str, str]]


@pytest.fixture
def child_env() -> EnvMaker:
    """`child_env(**extra)`: a child Python's environment (see `make_child_env`)."""
    return make_child_env


@pytest.fixture
def run_py() -> PyRunner:
    """Run `code` with `python -c` (args after it), wait, and return the completed process."""

    def run(code: str, *args: str, env: dict[str, str] | None = None,
            timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code, *args], env=env or make_child_env(), capture_output=True,
            text=True, timeout=timeout,
        )

    return run
