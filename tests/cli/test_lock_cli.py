"""One live process per run: a second `resume` exits 4 naming the holder; a dead holder's lock
is taken over, with its shell phase's leftover processes ended."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from corehelpers import DATA, cli, log_events, ok, start, status, wait_for

SPEC = DATA / "lock.yaml"


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:].split()[0] not in (b"Z", b"X")


def _kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -9


def test_second_resume_exits_4_naming_the_holder(tmp_path: Path) -> None:
    """While one `resume` runs a run, a second exits 4 and names the first's pid and host."""
    state, marker = tmp_path / "state", tmp_path / "marker"
    ok(cli(state, "run", str(SPEC), "--run-id", "lk", "--set", f"marker={marker}", "--set", "nap=3"), 1)
    marker.touch()  # the failed phase is fixed: resume now naps 3 s in phase `nap`
    first = start(state, "resume", "lk")
    try:
        wait_for(lambda: (state / "lk" / "phases" / "nap.i1" / "napping").exists(), 30, "the nap")
        second = cli(state, "resume", "lk")
        assert second.returncode == 4, second.stderr
        assert str(first.pid) in second.stderr and socket.gethostname() in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
        _out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            _kill9(first)
    assert status(state, "lk")["status"] == "completed"


@pytest.fixture(scope="module")
def killed_holder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run `lk` of data/lock.yaml, SIGKILLed while its phase `nap` sleeps, then resumed.
    Returns the status before and after the kill, the killed pid, and the resume."""
    base = tmp_path_factory.mktemp("stale")
    state, marker = base / "state", base / "marker"
    marker.touch()
    proc = start(state, "run", str(SPEC), "--run-id", "lk", "--set", f"marker={marker}", "--set", "nap=30")
    try:
        wait_for(lambda: (state / "lk" / "phases" / "nap.i1" / "napping").exists(), 30, "the nap")
        running = status(state, "lk")["status"]
    finally:
        _kill9(proc)
    killed = status(state, "lk")["status"]
    resumed = cli(state, "resume", "lk")  # the nap's second attempt does not sleep
    return {"state": state, "pid": proc.pid, "running": running, "killed": killed, "resumed": resumed,
            "final": status(state, "lk")["status"]}


def test_status_shows_interrupted_when_the_holder_was_killed(killed_holder: dict[str, Any]) -> None:
    """`status` says `running` while the holder lives and `interrupted` once it was SIGKILLed."""
    assert (killed_holder["running"], killed_holder["killed"]) == ("running", "interrupted")


def test_stale_lock_is_taken_over_and_the_run_completes(killed_holder: dict[str, Any]) -> None:
    """After the holder's kill -9 mid-phase, `resume` logs lock_taken_over and completes."""
    ok(killed_holder["resumed"])
    taken = [e for e in log_events(killed_holder["state"] / "lk") if e.get("event") == "lock_taken_over"]
    assert len(taken) == 1 and taken[0]["previous_pid"] == killed_holder["pid"]
    assert killed_holder["final"] == "completed"


def test_takeover_ends_the_dead_holders_shell_leftovers(tmp_path: Path) -> None:
    """A `sleep` left running by a killed runner's shell phase is ended by the takeover."""
    state, marker = tmp_path / "state", tmp_path / "marker"
    marker.touch()
    proc = start(state, "run", str(SPEC), "--run-id", "lk", "--set", f"marker={marker}",
                 "--set", f"mark_dir={tmp_path}")
    pid_file = tmp_path / "sleeper.pid"
    sleeper = 0
    try:
        wait_for(pid_file.exists, 30, "the shell phase's sleep")
        sleeper = int(pid_file.read_text())
        _kill9(proc)
        assert _alive(sleeper), "the shell phase's sleep died with the runner: nothing to test"
        ok(cli(state, "resume", "lk"))
        wait_for(lambda: not _alive(sleeper), 5, "the leftover sleep to end")
        taken = [e for e in log_events(state / "lk") if e.get("event") == "lock_taken_over"]
        assert len(taken) == 1 and taken[0]["killed_groups"], taken
    finally:
        if proc.poll() is None:
            _kill9(proc)
        if sleeper and _alive(sleeper):
            os.kill(sleeper, signal.SIGKILL)  # our own leftover, should the test fail
    assert status(state, "lk")["status"] == "completed"
