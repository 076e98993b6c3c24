"""Crash testing through a real `SIGKILL` of the current process at reproducible points.

Durability code is only as good as its behaviour when the process dies between two system
calls, and mocks cannot show that: the kernel, the page cache and the file system must see a
real death. So the store calls `crash_point(label)` at every place where a crash leaves a
distinct state on disk, and a test process started with `RUNNER_CRASH_AT=N` kills itself with
`SIGKILL` when it reaches the N-th point. Python buffers are deliberately not flushed: what
reached the kernel is on disk (in the page cache), and nothing else is, exactly as after kill -9.

`RUNNER_CRASH_LOG=PATH` appends `"<counter> <label>\\n"` for every point reached, so a test can
count the points of an uninterrupted run and then choose kill points (e.g. by a seeded RNG).

The environment is read once, at import. When neither variable is set, `crash_point` is a
function that returns at once, and `ACTIVE` is False so callers can skip work that exists only
to create crash points (the journal's split write of a line).

Note: the variables are inherited by child processes; code that starts user processes that
also import `runner` should remove them from the child's environment.
"""

from __future__ import annotations

import os
import signal

__all__ = ["ACTIVE", "CRASH_AT_ENV", "CRASH_LOG_ENV", "configure", "crash_point", "points_reached"]

CRASH_AT_ENV = "RUNNER_CRASH_AT"
CRASH_LOG_ENV = "RUNNER_CRASH_LOG"

# Module state; only `configure` changes it.
ACTIVE: bool = False
_crash_at: int | None = None
_log_fd: int | None = None
_counter: int = 0


def _parse_crash_at(raw: str | None) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        # A typo must not silently disable a crash test: fail loudly at import.
        raise ValueError(f"{CRASH_AT_ENV} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{CRASH_AT_ENV} must be a positive integer, got {raw!r}")
    return value


def configure(crash_at: int | None, crash_log: str | None) -> None:
    """Set the crash point and log (normally taken from the environment at import).

    Resets the counter. Meant for tests that drive failpoints inside one process; crash tests
    proper set the environment of a subprocess instead.
    """
    global ACTIVE, _crash_at, _log_fd, _counter
    if _log_fd is not None:
        os.close(_log_fd)
        _log_fd = None
    _crash_at = crash_at
    if crash_log:
        # O_APPEND so that several processes (a parent and its children) can share one log.
        _log_fd = os.open(crash_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    _counter = 0
    ACTIVE = _crash_at is not None or _log_fd is not None


def points_reached() -> int:
    """How many crash points this process has passed since start (or `configure`)."""
    return _counter


def _crash_point_active(label: str) -> None:
    global _counter
    _counter += 1
    if _log_fd is not None:
        # One write(2) per line: it reaches the kernel before the kill below, so the log shows
        # the point the process died at.
        os.write(_log_fd, f"{_counter} {label}\n".encode())
    if _crash_at is not None and _counter == _crash_at:
        os.kill(os.getpid(), signal.SIGKILL)


def crash_point(label: str) -> None:
    """Count a crash point; die by SIGKILL here if this is the `RUNNER_CRASH_AT`-th one."""
    if ACTIVE:
        _crash_point_active(label)


configure(_parse_crash_at(os.environ.get(CRASH_AT_ENV)), os.environ.get(CRASH_LOG_ENV) or None)
