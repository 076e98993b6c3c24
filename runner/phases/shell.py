"""Shell phases (`run:` in the spec).

The command runs with bash in the spec file's folder, in a process group of its own whose id
is recorded in the run's lock, so that a runner taking over from a dead holder can end what the
dead holder's shell phase left running. Its output goes to `stdout.log`/`stderr.log` in the
instance folder; `metrics.json` there becomes the metrics and `records.jsonl` the records.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Protocol

from runner.errors import PhaseError

__all__ = ["ShellPhaseFailed", "read_metrics_file", "run_shell_phase"]


class ShellPhaseFailed(PhaseError):
    """The shell command exited non-zero (retry `on: [ShellPhaseFailed]` to retry it)."""


class _ChildRegistry(Protocol):
    def add_child(self, pgid: int) -> None: ...
    def remove_child(self, pgid: int) -> None: ...


def read_metrics_file(path: Path, phase: str) -> dict[str, float]:
    """Parse a phase's metrics.json (name -> number); anything else fails the phase."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PhaseError(phase, f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PhaseError(phase, f"{path}: must be a JSON object of name -> number")
    return check_metrics(data, phase, str(path))


def check_metrics(data: Any, phase: str, where: str) -> dict[str, float]:
    """Metrics must map names to finite-or-not numbers; bools count as 0/1."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PhaseError(phase, f"{where}: metrics must be a mapping of name -> number, got {type(data).__name__}")
    metrics: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float)):
            raise PhaseError(phase, f"{where}: metric '{key}' is {value!r}, not a number")
        metrics[str(key)] = value
    return metrics


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


def run_shell_phase(
    command: str,
    *,
    cwd: Path,
    output_dir: Path,
    env: dict[str, str],
    phase: str,
    children: _ChildRegistry | None,
) -> dict[str, float]:
    """Run `command`; return its metrics or raise `ShellPhaseFailed` with stderr's tail."""
    output_dir.mkdir(parents=True, exist_ok=True)
    # Crash-test failpoints are for this process only, never for a command it starts.
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_CRASH_")}
    full_env.update(env)
    with open(output_dir / "stdout.log", "wb") as out, open(output_dir / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            ["bash", "-c", command], cwd=cwd, env=full_env, stdout=out, stderr=err,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        if children is not None:
            children.add_child(proc.pid)
        try:
            code = proc.wait()
        except BaseException:
            # Ctrl-C or an error here: do not leave the command running behind us.
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
        finally:
            if children is not None:
                children.remove_child(proc.pid)
    if code != 0:
        detail = _tail(output_dir / "stderr.log") or _tail(output_dir / "stdout.log")
        raise ShellPhaseFailed(phase, f"command exited {code}" + (f": {detail}" if detail else ""))
    return read_metrics_file(output_dir / "metrics.json", phase)
