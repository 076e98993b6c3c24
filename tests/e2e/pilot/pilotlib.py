"""Helpers of the pilot's end-to-end tests: the real CLI in subprocesses, and the run folder.

Every command runs as `python -m runner ... --state-dir DIR` from the repository root, in a
clean environment: no inherited `RUNNER_*` variables, one intra-op thread (as the llm tests use
in-process: on a busy 2-core machine thread wake-ups dominate the tiny model's small ops), and
the Hugging Face hub offline (every model here is a local folder).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "fixtures"
DEMO = REPO / "specs" / "demo.yaml"
PILOT = REPO / "specs" / "stage1_pilot.yaml"
GATE_METRICS = ("runaway_rate", "token_limit_rate", "delimiter_leakage",
                "median_response_tokens", "pair_acceptance")
# The exit codes of `run` and `resume` (CONTRACT.md).
EXIT_OK, EXIT_FAILED, EXIT_GATE = 0, 1, 3
_TIMEOUT_S = 300


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of one CLI process: clean of RUNNER_*, single-threaded, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def runner(state_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m runner ARGS --state-dir STATE_DIR` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "runner", *args, "--state-dir", str(state_dir)],
        cwd=REPO, env=cli_env(**env), capture_output=True, text=True, timeout=_TIMEOUT_S,
    )


def ok(proc: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    """`proc`, after checking its exit code (the failure message shows its stderr)."""
    assert proc.returncode == code, (
        f"{proc.args} exited {proc.returncode}, expected {code}\n"
        f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )
    return proc


def status(state_dir: Path, run_id: str) -> dict[str, Any]:
    """`runner status RUN_ID --json`."""
    return json.loads(ok(runner(state_dir, "status", run_id, "--json")).stdout)


def gate(state_dir: Path, run_id: str) -> dict[str, Any]:
    """`runner gate RUN_ID --json`."""
    return json.loads(ok(runner(state_dir, "gate", run_id, "--json")).stdout)


def instance(st: dict[str, Any], name: str, iteration: int) -> dict[str, Any]:
    """The phase instance `name` of `iteration` in a status object."""
    found = [p for p in st["phases"] if p["name"] == name and p["iteration"] == iteration]
    assert len(found) == 1, f"{name} in iteration {iteration}: {found} of {st['phases']}"
    return found[0]


def log_lines(state_dir: Path, run_id: str) -> list[dict[str, Any]]:
    """The run's structured log (`log.jsonl`), one dict per line."""
    path = state_dir / run_id / "log.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def phase_records(state_dir: Path, run_id: str) -> dict[str, bytes]:
    """Phase instance folder name (`NAME.iN`) -> the bytes of its `records.jsonl`."""
    phases = state_dir / run_id / "phases"
    return {d.name: (d / "records.jsonl").read_bytes()
            for d in sorted(phases.iterdir()) if (d / "records.jsonl").is_file()}


def committed_batches(phase_dir: Path) -> list[int]:
    """The indexes of the committed batch files of a phase instance folder."""
    names = os.listdir(phase_dir / "batches") if (phase_dir / "batches").is_dir() else []
    return sorted(int(m.group(1)) for n in names if (m := re.fullmatch(r"(\d{6,})\.jsonl", n)))


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    """Write a spec mapping as YAML."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def demo_copy(path: Path, shared_threshold: bool = True) -> Path:
    """`specs/demo.yaml` with absolute fixture paths, written to `path`.

    With `shared_threshold=False` the instruction critic's threshold is a literal 0.5, so
    `critic.confidence_threshold` feeds only the pair critic.
    """
    text = DEMO.read_text(encoding="utf-8")
    assert text.count("../fixtures/") == 5, "demo.yaml's fixture paths changed; update demo_copy"
    text = text.replace("../fixtures/", f"{FIXTURES}/")
    if not shared_threshold:
        shared = "confidence_threshold: ${params.critic.confidence_threshold}"
        assert text.count(shared) == 2, "demo.yaml's critic thresholds changed; update demo_copy"
        text = text.replace(shared, "confidence_threshold: 0.5", 1)  # the instruction critic
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class CrashPoint:
    """One line of a `RUNNER_CRASH_LOG`: the process's N-th crash point and its label."""

    number: int
    label: str


def crash_points_by_phase(crash_log: Path, run_dir: Path) -> dict[str, list[CrashPoint]]:
    """The crash points an uninterrupted run passed inside each phase, by phase name.

    The k-th `journal.before_write` of the log writes the k-th line of `events.jsonl`; the
    points after a `phase_started` line's write and before the next journal write are that
    phase's own work (its batches).
    """
    points = [CrashPoint(int(n), label) for n, label in
              (line.split(" ", 1) for line in crash_log.read_text().splitlines() if line)]
    events = [json.loads(line)["event"] for line in
              (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines() if line]
    writes = [i for i, p in enumerate(points) if p.label == "journal.before_write"]
    assert len(writes) == len(events), f"{len(writes)} journal writes for {len(events)} events"
    by_phase: dict[str, list[CrashPoint]] = {}
    for k, (at, event) in enumerate(zip(writes, events)):
        if event["kind"] != "phase_started":
            continue
        end = writes[k + 1] if k + 1 < len(writes) else len(points)
        inside = [p for p in points[at:end] if not p.label.startswith("journal.")]
        by_phase.setdefault(event["name"], []).extend(inside)
    return by_phase


def nth_after(points: list[CrashPoint], label: str, n: int, then: str | None = None) -> int:
    """The number of the `n`-th (1-based) point labelled `label`, or of the first `then` after it."""
    hits = [i for i, p in enumerate(points) if p.label == label]
    assert len(hits) >= n, f"only {len(hits)} '{label}' points in {points}"
    i = hits[n - 1]
    if then is None:
        return points[i].number
    return next(p.number for p in points[i + 1:] if p.label == then)
