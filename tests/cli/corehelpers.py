"""Helpers of the end-to-end tests of the core: the real `python -m runner` in subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
SPECS = REPO_ROOT / "specs"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a `runner` subprocess: nothing inherited that starts with RUNNER_."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update(extra)
    return env


def argv(state_dir: Path | str, *args: str) -> list[str]:
    """The command line of `python -m runner --state-dir STATE_DIR ARGS...`."""
    return [sys.executable, "-m", "runner", "--state-dir", str(state_dir), *args]


def cli(state_dir: Path | str, *args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one `runner` command to its end; return the completed process (text output)."""
    return subprocess.run(argv(state_dir, *args), env=env or child_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _ctrl_c_as_in_a_terminal() -> None:
    # A shell that starts the tests in the background (`... &`, no job control) leaves SIGINT
    # ignored, and children inherit that: Python then never raises KeyboardInterrupt, so a
    # test that sends Ctrl-C would wait on a process that cannot hear it. A user's terminal
    # delivers Ctrl-C; give the child the default disposition, as a terminal's shell does.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(state_dir: Path | str, *args: str, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start one `runner` command in the background (stdout and stderr piped)."""
    return subprocess.Popen(argv(state_dir, *args), env=env or child_env(), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_as_in_a_terminal if os.name == "posix" else None)


def ok(proc: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    """Assert the exit code, showing the output when it differs."""
    assert proc.returncode == code, (
        f"exit {proc.returncode}, expected {code}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def status(state_dir: Path | str, run_id: str) -> dict[str, Any]:
    """`runner status RUN_ID --json`, parsed."""
    return json.loads(ok(cli(state_dir, "status", run_id, "--json")).stdout)


def decide(state_dir: Path | str, run_id: str, gate: str, decision: str, *extra: str,
           code: int = 0) -> subprocess.CompletedProcess[str]:
    """`runner decide` with a reviewer and a reason; asserts the exit code."""
    return ok(cli(state_dir, "decide", run_id, "--gate", gate, "--decision", decision,
                  "--reviewer", "tester", "--reason", f"test says {decision}", *extra), code)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and folder under `root`: relative path -> sha256 of its bytes ('dir' for
    a folder), so that two digests are equal exactly when no file was added, removed or
    changed."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def log_events(run_dir: Path) -> list[dict[str, Any]]:
    """The run's structlog JSON lines (`log.jsonl`), parsed."""
    path = run_dir / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def copy_run(src_state: Path, dst_state: Path) -> Path:
    """Copy a whole state dir (its run folders) to `dst_state`; return `dst_state`."""
    shutil.copytree(src_state, dst_state, symlinks=True)
    return dst_state


