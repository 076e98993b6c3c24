"""A key -> JSON-object store in one SQLite file: caches with many small entries, few files.

One file per store instead of one file per entry: a cache of 15,000 (or 15 million) entries is
one database, not as many inodes, which matters on the shared file systems Ray needs. The
standard library's `sqlite3` does the hard parts:

* **No half-written entry.** Writes go through transactions; `transaction()` gathers puts in
  memory and writes them in one `BEGIN IMMEDIATE ... COMMIT`, so after kill -9 a batch of
  entries is wholly there or wholly absent (SQLite rolls an uncommitted WAL tail back on the
  next open). Failpoints `kv.row_written` and `kv.before_commit` let crash tests prove it.
* **Several processes.** WAL mode lets readers run beside the one writer, and a writer waits
  up to `busy_timeout_s` for another's transaction instead of failing. (WAL needs every
  process on one host; the critic gives each shard its own file, so Ray workers on other hosts
  never share one.) `synchronous=NORMAL`: a power cut may lose the last transactions, never
  the database's consistency; a cache can afford that, a process crash loses nothing.
* **Damage is survivable.** A value that does not parse as a JSON object reads as missing (the
  caller recomputes and overwrites it). A file that is not a database, fails SQLite's
  `quick_check`, or has another schema is moved aside as `NAME.damaged-STAMP` (with its
  `-wal`/`-shm`), a warning is logged, and an empty store takes its place.

Values are opaque JSON objects here; what they mean (and whether one is valid) is the caller's
business, so a caller that finds a value it cannot use treats it as missing.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from .atomic import makedirs_durable
from .failpoints import crash_point

__all__ = ["FORMAT_VERSION", "KVStore"]

FORMAT_VERSION = 1  # PRAGMA user_version of a store made by this module
_DAMAGED = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB: the file itself is bad
_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED: another process holds the lock
_SIDE_FILES = ("-wal", "-shm")
_log = structlog.get_logger("runner.store")


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _DAMAGED
    text = str(exc)
    return "not a database" in text or "malformed" in text


def _is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return (code & 0xFF) in _BUSY if code is not None else "locked" in str(exc)


class _Damaged(Exception):
    """The file is not a usable store (carries the reason)."""


class KVStore:
    """key (str) -> JSON object, in one SQLite file; opened on first use."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 60.0,
                 log: Any = None) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.moved_aside: list[Path] = []  # damaged files this instance moved out of the way
        self._log = log or _log
        self._conn: sqlite3.Connection | None = None
        self._pending: dict[str, str] | None = None  # puts of the open transaction()

    # -- opening, damage ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if not self.path.parent.is_dir():
            makedirs_durable(self.path.parent)
        try:
            self._conn = self._open_waiting()
        except _Damaged as exc:
            self._move_aside(str(exc))
            self._conn = self._open_waiting()  # a fresh file: damage now would be a real I/O fault
        return self._conn

    def _open_waiting(self) -> sqlite3.Connection:
        # Two processes creating the file at once: switching it to WAL upgrades a read lock,
        # which SQLite refuses at once (no busy handler: it could deadlock). Retry that.
        retrying = Retrying(stop=stop_after_delay(self.busy_timeout_s),
                            wait=wait_exponential(multiplier=0.01, max=0.5),
                            retry=retry_if_exception(_is_busy), reraise=True)
        return retrying(self._open)

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; `_write` issues BEGIN/COMMIT itself.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL mode on {self.path} (got {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if check != "ok":
                raise _Damaged(f"quick_check: {check}")
            self._ensure_schema(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _is_damage(exc):
                raise _Damaged(str(exc)) from None
            raise
        except _Damaged:
            conn.close()
            raise
        return conn

    @staticmethod
    def _ensure_schema(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.execute("BEGIN IMMEDIATE")  # two processes creating it at once: one waits
            conn.execute("CREATE TABLE IF NOT EXISTS kv "
                         "(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID")
            conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            conn.execute("COMMIT")
            version = FORMAT_VERSION
        if version != FORMAT_VERSION:
            raise _Damaged(f"format version {version}, expected {FORMAT_VERSION}")
        columns = [row[1] for row in conn.execute("PRAGMA table_info(kv)")]
        if columns != ["key", "value"]:
            raise _Damaged(f"table kv has columns {columns}, expected ['key', 'value']")

    def _move_aside(self, reason: str) -> None:
        """Rename the damaged file (and its WAL files) out of the way and log a warning."""
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        # The WAL files go first: a WAL left beside a fresh database would be replayed into it.
        for suffix in _SIDE_FILES:
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.replace(side, f"{target}{suffix}")
        if self.path.exists():
            os.replace(self.path, target)
        self.moved_aside.append(target)
        self._log.warning("kv_store_damaged", path=str(self.path), moved_to=str(target),
                          reason=reason, hint="its entries are computed again")

    # -- reading -----------------------------------------------------------------------------

    @staticmethod
    def _decode(raw: Any) -> dict[str, Any] | None:
        try:
            value = json.loads(raw)
        except (TypeError, ValueError):  # not JSON, or bytes that are not UTF-8
            return None
        return value if isinstance(value, dict) else None

    def get(self, key: str) -> dict[str, Any] | None:
        """The object stored under `key`; None when absent or unreadable (then recompute it)."""
        if self._pending is not None and key in self._pending:
            return self._decode(self._pending[key])
        try:
            row = self._connect().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            self._move_aside(str(exc))
            return None
        return None if row is None else self._decode(row[0])

    def __len__(self) -> int:
        """How many entries are stored (readable or not)."""
        return int(self._connect().execute("SELECT count(*) FROM kv").fetchone()[0])

    # -- writing -----------------------------------------------------------------------------

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store `value` under `key` (replacing any); committed at once, or with the
        enclosing `transaction()`."""
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {key!r}")
        if not isinstance(value, dict):
            raise TypeError(f"value must be a dict (a JSON object), got {type(value).__name__}")
        encoded = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
        if self._pending is not None:
            self._pending[key] = encoded
        else:
            self._write({key: encoded})

    def put_many(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Store every (key, value) pair in one transaction."""
        with self.transaction():
            for key, value in items:
                self.put(key, value)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Puts inside the block commit together when it ends; if it raises, none is stored."""
        if self._pending is not None:  # nested: the outer block commits
            yield
            return
        self._pending = {}
        try:
            yield
            pending = self._pending
        finally:
            self._pending = None
        if pending:
            self._write(pending)

    def _write(self, rows: dict[str, str]) -> None:
        try:
            self._write_once(rows)
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            self._move_aside(str(exc))
            self._write_once(rows)  # into the fresh file

    def _write_once(self, rows: dict[str, str]) -> None:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")  # take the write lock now, waiting up to the timeout
        try:
            for key, encoded in rows.items():
                conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, encoded))
                crash_point("kv.row_written")
            crash_point("kv.before_commit")
            conn.execute("COMMIT")
        except BaseException:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:  # the original error says more than a failed rollback
                pass
            raise
        crash_point("kv.after_commit")

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; the last one to close folds the WAL back into the file."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> KVStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
