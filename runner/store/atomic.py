"""Atomic, durable file writes: the only way the store replaces or creates a whole file.

A reader (another process, or this one after kill -9 or a power cut) must see either the old
content of a file or the new one, never a mix, and a write reported as done must survive a
crash. The recipe for that on POSIX file systems is: write a temporary file in the same folder
(same file system, so the rename is atomic), fsync it (its data is on disk before its name is),
rename it over the target, then fsync the folder (the rename itself is on disk).

Temporary files are named `.<target name>.<random hex>.tmp`; `is_temp_name` recognises them,
so a crash's leftovers can be found and removed (`BatchStore.discard_uncommitted`).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from .failpoints import crash_point

__all__ = [
    "TEMP_SUFFIX",
    "canonical_json",
    "create_exclusive",
    "dumps_json",
    "fsync_dir",
    "is_temp_name",
    "makedirs_durable",
    "write_atomic",
    "write_json_atomic",
]

TEMP_SUFFIX = ".tmp"
FILE_MODE = 0o644  # run folders are meant to be read by colleagues; umask still applies


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a folder, so that names created, renamed or removed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: str | os.PathLike[str]) -> Path:
    """Create `path` and any missing parents, fsyncing each parent that gained a name."""
    target = Path(path)
    missing: list[Path] = []
    p = target
    while not p.is_dir():
        missing.append(p)
        p = p.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:  # created concurrently: fine, as long as it is a folder
            if not folder.is_dir():
                raise
        fsync_dir(folder.parent)
    return target


def is_temp_name(name: str) -> bool:
    """True for the name of a temporary file made by this module."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _write_all(fd: int, data: bytes) -> None:
    # os.write may write less than asked (signals, quotas); loop until all of it is written.
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_temp(folder: Path, target_name: str, data: bytes, sync: bool = True) -> Path:
    """Create a new temporary file next to the target, write `data`, fsync, close it."""
    while True:
        tmp = folder / f".{target_name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
        try:
            # O_EXCL: never write through a name someone else created (or a symlink).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
        break
    try:
        _write_all(fd, data)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_atomic(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically and durably (temp, fsync, rename, fsync folder).

    `durable=False` skips both fsyncs: still atomic for readers and across kill -9 (the page
    cache survives a process), but a power cut may lose the new content or leave an empty
    file. Only for caches that can be rebuilt and whose staleness is detected (the snapshot).
    """
    target = Path(path)
    folder = target.parent
    tmp = _write_temp(folder, target.name, data, sync=durable)
    try:
        crash_point("atomic.after_temp_write")
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    crash_point("atomic.after_rename")
    if durable:
        fsync_dir(folder)


def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def dumps_json(obj: Any) -> bytes:
    """The store's JSON file format: sorted keys, one space of indent, trailing newline.

    Sorted keys make equal objects byte-identical (diffable, hashable); the small indent keeps
    files readable by `less` without doubling their size.
    """
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, durable: bool = True) -> None:
    """Serialise `obj` with `dumps_json` and write it with `write_atomic`."""
    write_atomic(path, dumps_json(obj), durable=durable)


def create_exclusive(path: str | os.PathLike[str], data: bytes) -> bool:
    """Create `path` holding `data` if no file of that name exists; False if one does.

    Complete content or nothing appears under `path` (the file is written and fsync'd under a
    temporary name first), and of several concurrent callers exactly one wins, because
    `link(2)` fails atomically when the target name exists (unlike `rename(2)`, which would
    silently replace the winner). This is what makes two concurrent `decide` calls safe.
    """
    target = Path(path)
    folder = target.parent
    tmp = _write_temp(folder, target.name, data)
    try:
        crash_point("exclusive.after_temp_write")
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        crash_point("exclusive.after_link")
    finally:
        _unlink_quietly(tmp)
    fsync_dir(folder)
    return True

