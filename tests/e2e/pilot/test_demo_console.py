"""What a person sees of `runner run specs/demo.yaml`: in a pipe, and on a real terminal (pty)."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import yaml
from pilotlib import DEMO, EXIT_GATE, REPO, cli_env, ok, runner

pytestmark = pytest.mark.slow

MAX_LINE = 160
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
STEPS = yaml.safe_load(DEMO.read_text(encoding="utf-8"))["phases"]
PHASES = [p["name"] for p in STEPS if "name" in p]
GATES = [p["gate"] for p in STEPS if "gate" in p]
CHECKS = next(p for p in STEPS if "gate" in p)["checks"]
BEFORE_GATE = [p["name"] for p in STEPS[: next(i for i, p in enumerate(STEPS) if "gate" in p)]]


@pytest.fixture(scope="module")
def piped(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The demo run to its gate with stdout and stderr piped: every line it printed."""
    proc = ok(runner(tmp_path_factory.mktemp("piped") / "state", "run", str(DEMO), "--run-id", "p1"), EXIT_GATE)
    return proc.stdout.splitlines() + proc.stderr.splitlines()


def _phase_lines(lines: list[str], phase: str) -> list[str]:
    return [line for line in lines if re.match(rf"^\d\d:\d\d:\d\d . {re.escape(phase)}\b", line)]


def _gate_block(lines: list[str]) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith("⏸ gate "))
    return lines[start:]


def test_piped_run_prints_at_most_two_lines_per_phase(piped):
    """Each phase that ran before the gate has a start and an end line, nothing else is printed
    but the `run ... in` line and the gate block."""
    ran = [p for p in PHASES if _phase_lines(piped, p)]
    assert ran == BEFORE_GATE and all(len(_phase_lines(piped, p)) == 2 for p in ran), piped
    assert len(piped) == 1 + 2 * len(ran) + len(_gate_block(piped)), piped


def test_piped_lines_fit_160_characters(piped):
    """No line of the piped console output is longer than 160 characters."""
    assert [line for line in piped if len(line) > MAX_LINE] == []


def test_piped_gate_block_has_the_check_table_and_commands(piped):
    """The gate block: a ✓/✗ row per check with value and threshold, and the exact next commands."""
    block = _gate_block(piped)
    assert block[0].startswith(f"⏸ gate {GATES[0]} (iteration 1): ")
    rows = [line.split() for line in block if line[:1] in ("✓", "✗")]
    expected = [c.split()[0] for c in CHECKS]  # the spec's checks, in order
    assert [r[1] for r in rows] == expected and all(len(r) == 5 for r in rows), block
    assert f"  runner decide p1 --gate {GATES[0]} --decision proceed|iterate|abort --reviewer WHO --reason '...'" in block
    assert "  runner gate p1" in block and "  runner resume p1" in block


def test_piped_end_lines_carry_key_metrics(piped):
    """A generation phase's end line shows kept/generated and tokens; qc's its runaway rate."""
    [_, gen_end] = _phase_lines(piped, "generate_instructions")
    [_, qc_end] = _phase_lines(piped, "qc")
    assert re.search(r"kept \d+/\d+  tokens \d+", gen_end) and "runaway_rate" in qc_end


def _run_on_a_pty(state: Path, cols: int = 120, rows: int = 40) -> tuple[int, str]:
    """`runner run specs/demo.yaml` with a real terminal as its stdout and stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = cli_env(TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(DEMO), "--run-id", "t1",
                             "--state-dir", str(state)], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError as exc:  # EIO: every writer of the terminal has closed it
            if exc.errno != errno.EIO:
                raise
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", errors="replace")


def test_live_view_on_a_real_terminal(tmp_path):
    """On a pty: rich's live table (cursor redraws), a bar with counts and ETA, then the gate table."""
    rc, raw = _run_on_a_pty(tmp_path / "state")
    text = ANSI.sub("", raw)
    assert rc == EXIT_GATE, text[-3000:]
    assert "\x1b[2K" in raw or "\x1b[1A" in raw  # the live area is redrawn in place
    assert re.search(r"generate_instructions: generate\s+━+\s+\d+/80 .*ETA", text), text[-3000:]
    assert all(re.search(rf"✓ {p}\s+succeeded", text) for p in BEFORE_GATE), text[-3000:]
    assert "awaiting decision" in text and "event_kind=" not in text
    assert re.search(r"✓\s+qc\.runaway_rate", text) and "runner decide t1 --gate pilot_qc" in text
