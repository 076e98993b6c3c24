"""Tests of `runner.store.lock` with real processes: LockHeld, takeover, child cleanup."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runner.errors import LockHeld
from runner.store.lock import Holder, RunLock, holder_alive, proc_start, read_holder

# Holds the lock of run dir argv[1]; with argv[2] == "child" it also starts a process group
# (optionally one that ignores SIGTERM) and records it. Prints "<pid> <child pid>" when ready.
HOLDER = """
import os, subprocess, sys, time
from runner.store.lock import RunLock
lock = RunLock(sys.argv[1], "r1")
lock.acquire()
child_pid = 0
if len(sys.argv) > 2:
    script = 'trap "" TERM; echo ready; exec sleep 60' if sys.argv[2] == "stubborn" else (
        'echo ready; exec sleep 60')
    child = subprocess.Popen(["sh", "-c", script], start_new_session=True,
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    child.stdout.readline()
    lock.add_child(child.pid)
    child_pid = child.pid
print(os.getpid(), child_pid, flush=True)
time.sleep(60)
"""


def _start_holder(
    run_dir: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir), *args], env=env, stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    _, child = proc.stdout.readline().split()
    return proc, int(child)


def _kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=5)


def _wait_gone(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc_start(pid) is None:  # gone, or a zombie nobody has reaped yet
            return True
        time.sleep(0.02)
    return False


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_second_process_gets_lock_held_naming_pid_and_host(tmp_path: Path, child_env: Any) -> None:
    """While a live subprocess holds the lock, acquire raises LockHeld with its pid and host."""
    holder, _ = _start_holder(tmp_path, child_env())
    try:
        with pytest.raises(LockHeld) as info:
            RunLock(tmp_path, "r1").acquire()
        assert info.value.pid == holder.pid and info.value.host == socket.gethostname()
        assert f"pid {holder.pid}" in str(info.value)
    finally:
        _kill9(holder)


def test_stale_lock_is_taken_over_and_its_child_group_killed(
    tmp_path: Path, child_env: Any
) -> None:
    """After SIGKILL of the holder, acquire returns a Takeover and ends its recorded group."""
    holder, child = _start_holder(tmp_path, child_env(), "child")
    _kill9(holder)
    assert proc_start(child) is not None  # the orphaned group outlived its holder
    lock = RunLock(tmp_path, "r1")
    takeover = lock.acquire()
    try:
        assert takeover is not None and takeover.previous.pid == holder.pid
        assert takeover.killed == (child,)
        assert _wait_gone(child)
    finally:
        lock.release()


def test_takeover_sigkills_a_group_that_ignores_sigterm(tmp_path: Path, child_env: Any) -> None:
    """A leftover group that ignores SIGTERM is SIGKILLed after the grace period."""
    holder, child = _start_holder(tmp_path, child_env(), "stubborn")
    _kill9(holder)
    lock = RunLock(tmp_path, "r1")
    lock.kill_grace_s = 0.2
    try:
        assert lock.acquire() is not None
        assert _wait_gone(child)
    finally:
        lock.release()


def test_takeover_spares_a_group_whose_leader_start_time_differs(tmp_path: Path) -> None:
    """A recorded child whose pid now belongs to another process (start time differs) lives."""
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        stale = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "then",
                 "proc_start": 1, "children": [{"pgid": bystander.pid, "proc_start": 1}]}
        (tmp_path / "lock").write_text(json.dumps(stale))
        lock = RunLock(tmp_path, "r1")
        takeover = lock.acquire()
        lock.release()
        assert takeover is not None and takeover.killed == () and len(takeover.skipped) == 1
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_clean_release_gives_no_takeover(tmp_path: Path) -> None:
    """A lock released normally leaves no holder info, so the next acquire returns None."""
    with RunLock(tmp_path, "r1"):
        pass
    assert read_holder(tmp_path) is None
    with RunLock(tmp_path, "r1") as lock:
        assert lock.takeover is None


def test_read_holder_shows_the_live_holder_and_its_children(tmp_path: Path) -> None:
    """read_holder (no lock taken) sees pid, host and children added and removed."""
    with RunLock(tmp_path, "r1") as lock:
        lock.add_child(os.getpid())
        lock.add_child(12345678)
        lock.remove_child(12345678)
        holder = read_holder(tmp_path)
        assert holder is not None and holder.pid == os.getpid()
        assert [c.pgid for c in holder.children] == [os.getpid()]
        assert holder.children[0].proc_start == proc_start(os.getpid())
        assert holder_alive(holder)


def test_holder_alive_false_for_a_dead_pid(tmp_path: Path) -> None:
    """A holder whose process has exited is not alive."""
    holder = Holder(pid=_dead_pid(), host=socket.gethostname(), started="x", proc_start=1)
    assert not holder_alive(holder)


def test_holder_alive_false_for_a_reused_pid() -> None:
    """A live pid with another start time than recorded is a reused pid: not alive."""
    start = proc_start(os.getpid())
    assert start is not None
    holder = Holder(pid=os.getpid(), host=socket.gethostname(), started="x", proc_start=start + 1)
    assert not holder_alive(holder)


def test_holder_on_another_host_counts_as_alive() -> None:
    """A holder on a different host cannot be checked, so it counts as alive."""
    holder = Holder(pid=_dead_pid(), host=socket.gethostname() + "-elsewhere", started="x",
                    proc_start=1)
    assert holder_alive(holder)
