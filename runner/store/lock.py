"""One live process per run: an flock'd `RUN_DIR/lock` whose content names the holder.

`flock` is released by the kernel when its holder dies, however it dies, so a lock can never
stay "held" by a dead process. Its content, though, survives: holder info is written on
acquire and cleared on a clean release, so finding info of another holder in a file we just
locked means that holder died without releasing (kill -9, crash, reboot) — a takeover. The
new holder then ends the process groups the dead one's shell phases left behind, which would
otherwise keep writing into the run folder.

Process identity: a pid can be reused, so every pid is recorded with its start time
(`/proc/<pid>/stat` field 22, clock ticks since boot) and the boot id; a process is "the same"
only if all match. This module never signals a process whose identity does not match.

`read_holder` and `holder_alive` only read: `status` must never take (even briefly) the lock,
or a concurrent `run` could fail with `LockHeld` because of it.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LockHeld
from .journal import utc_now

__all__ = [
    "Child",
    "Holder",
    "RunLock",
    "Takeover",
    "boot_id",
    "holder_alive",
    "kill_group",
    "proc_start",
    "read_holder",
]

LOCK_NAME = "lock"


def proc_start(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks after boot), or None if it does not exist
    or is a zombie (a zombie has ended; only its exit status waits to be collected)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 2 (comm) is parenthesised and may hold spaces or ')': split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])  # fields[0] is field 3 (state), so field 22 is fields[19]


def boot_id() -> str:
    """This boot's id: a pid and start time from a previous boot must not match this one."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # pragma: no cover - not Linux
        return ""


@dataclass(frozen=True)
class Child:
    """A process group started by a shell phase, identified by its leader's start time."""

    pgid: int
    proc_start: int | None


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held without releasing) a run's lock."""

    pid: int
    host: str
    started: str
    proc_start: int | None
    children: tuple[Child, ...] = ()
    boot_id: str = ""

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Holder:
        kids = tuple(Child(int(c["pgid"]), c.get("proc_start")) for c in obj.get("children", []))
        return cls(
            pid=int(obj["pid"]), host=str(obj["host"]), started=str(obj.get("started", "?")),
            proc_start=obj.get("proc_start"), children=kids, boot_id=str(obj.get("boot_id", "")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid, "host": self.host, "started": self.started,
            "proc_start": self.proc_start, "boot_id": self.boot_id,
            "children": [{"pgid": c.pgid, "proc_start": c.proc_start} for c in self.children],
        }


@dataclass(frozen=True)
class Takeover:
    """A lock taken over from a holder that died; what was done about its leftovers."""

    previous: Holder
    killed: tuple[int, ...] = ()  # process groups that were signalled
    skipped: tuple[str, ...] = field(default=())  # groups left alone, with the reason


def _parse_holder(data: bytes) -> Holder | None:
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    return Holder.from_json(json.loads(text))


def _read_holder_file(path: Path, attempts: int = 20) -> Holder | None:
    # The holder rewrites the file in place; a read racing with that rewrite can see a mix.
    # Such a read fails to parse, and a retry a moment later sees the finished write.
    for attempt in range(attempts):
        try:
            return _parse_holder(path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            if attempt + 1 < attempts:
                time.sleep(0.005)
    return None


def read_holder(run_dir: str | os.PathLike[str]) -> Holder | None:
    """The holder info in the run's lock file (without locking), or None if there is none."""
    return _read_holder_file(Path(run_dir) / LOCK_NAME)


def _same_machine(holder: Holder) -> bool:
    return holder.host == socket.gethostname() and holder.boot_id in ("", boot_id())


def holder_alive(holder: Holder) -> bool:
    """Whether the holder is still running. A holder on another host cannot be checked and
    counts as alive; one on this host from an earlier boot is dead."""
    if holder.host != socket.gethostname():
        return True
    if holder.boot_id and holder.boot_id != boot_id():
        return False
    start = proc_start(holder.pid)
    if holder.proc_start is None:  # recorded without /proc: the pid's existence must do
        return start is not None
    return start == holder.proc_start


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # kill(0) succeeds on zombies too; the leader being gone or a zombie is not enough to say
    # the group is gone, but a group whose leader is alive surely is not.
    return proc_start(pgid) is not None or _has_live_members(pgid)


def _has_live_members(pgid: int) -> bool:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def kill_group(pgid: int, grace_s: float) -> None:
    """SIGTERM a process group, wait up to `grace_s` for it to end, then SIGKILL it."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        time.sleep(0.02)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class RunLock:
    """The lock of one run. `acquire()` raises `LockHeld` or returns a `Takeover` or None."""

    def __init__(self, run_dir: str | os.PathLike[str], run_id: str) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.run_id = run_id
        self.kill_grace_s = 2.0  # SIGTERM -> SIGKILL delay for a dead holder's leftovers
        self._fd: int | None = None
        self._info: Holder | None = None
        self.takeover: Takeover | None = None  # what the last acquire() took over, if anything

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> Takeover | None:
        if self._fd is not None:
            raise RuntimeError(f"lock of run '{self.run_id}' is already held by this object")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_holder_file(self.path)
            if holder is None:  # locked but not yet written (it just started): say so
                raise LockHeld(self.run_id, 0, "unknown host", "just now") from None
            raise LockHeld(self.run_id, holder.pid, holder.host, holder.started) from None
        self._fd = fd
        # Unparseable leftovers (a crash mid-rewrite) count as none; they are overwritten below.
        previous = _read_holder_file(self.path, attempts=1)
        pid = os.getpid()
        self._info = Holder(
            pid=pid, host=socket.gethostname(), started=utc_now(),
            proc_start=proc_start(pid), children=(), boot_id=boot_id(),
        )
        self._write_info()
        self.takeover = self._take_over(previous) if previous is not None else None
        return self.takeover

    def _take_over(self, previous: Holder) -> Takeover:
        killed: list[int] = []
        skipped: list[str] = []
        for child in previous.children:
            if not _same_machine(previous):
                skipped.append(f"{child.pgid}: recorded on {previous.host}, another machine/boot")
            elif child.proc_start is None or proc_start(child.pgid) != child.proc_start:
                skipped.append(f"{child.pgid}: gone (or its pid was reused)")
            else:
                kill_group(child.pgid, self.kill_grace_s)
                killed.append(child.pgid)
        return Takeover(previous=previous, killed=tuple(killed), skipped=tuple(skipped))

    def _write_info(self, clear: bool = False) -> None:
        assert self._fd is not None
        if clear:
            os.ftruncate(self._fd, 0)
        else:
            assert self._info is not None
            data = (json.dumps(self._info.to_json(), sort_keys=True) + "\n").encode()
            # In place (renaming a new file over it would give readers a different inode than
            # the one locked). Pad with spaces up to the old size instead of truncating first,
            # so a racing reader sees old or new JSON plus blanks, never an empty file.
            size = os.fstat(self._fd).st_size
            os.pwrite(self._fd, data.ljust(size), 0)
            if size > len(data) + 256:
                os.ftruncate(self._fd, len(data))
        os.fsync(self._fd)

    def add_child(self, pgid: int) -> None:
        """Record a process group started by a shell phase (its leader's pid is `pgid`)."""
        assert self._info is not None, "add_child needs the lock"
        kids = tuple(c for c in self._info.children if c.pgid != pgid)
        self._replace_children(kids + (Child(pgid, proc_start(pgid)),))

    def remove_child(self, pgid: int) -> None:
        """Forget a process group once it has ended."""
        assert self._info is not None, "remove_child needs the lock"
        self._replace_children(tuple(c for c in self._info.children if c.pgid != pgid))

    def _replace_children(self, children: tuple[Child, ...]) -> None:
        assert self._info is not None
        info = self._info
        self._info = Holder(info.pid, info.host, info.started, info.proc_start, children,
                            info.boot_id)
        self._write_info()

    def release(self) -> None:
        """Clear the holder info (so the next holder sees a clean release), unlock, close."""
        if self._fd is None:
            return
        try:
            self._write_info(clear=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None
            self._info = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
