"""KVStore: one SQLite file of key -> JSON object; transactions, damage, crashes, processes."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.store.kv import KVStore


def _rows(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT key, value FROM kv"))


def test_put_then_get_returns_the_value(tmp_path: Path) -> None:
    """A stored object reads back equal; an unknown key reads None."""
    with KVStore(tmp_path / "c.sqlite") as kv:
        kv.put("k", {"p": 0.25, "tags": ["a", "é"]})
        assert (kv.get("k"), kv.get("other")) == ({"p": 0.25, "tags": ["a", "é"]}, None)


def test_values_survive_reopening(tmp_path: Path) -> None:
    """What one store instance commits, a later one (a resumed process) reads."""
    with KVStore(tmp_path / "c.sqlite") as kv:
        kv.put_many([("a", {"v": 1}), ("b", {"v": 2})])
    with KVStore(tmp_path / "c.sqlite") as kv:
        assert (kv.get("a"), kv.get("b"), len(kv)) == ({"v": 1}, {"v": 2}, 2)


def test_put_replaces_an_earlier_value(tmp_path: Path) -> None:
    """A second put of a key overwrites the first (how a rescored entry repairs a bad one)."""
    with KVStore(tmp_path / "c.sqlite") as kv:
        kv.put("k", {"v": 1})
        kv.put("k", {"v": 2})
        assert (kv.get("k"), len(kv)) == ({"v": 2}, 1)


def test_database_uses_wal_mode(tmp_path: Path) -> None:
    """The file is in WAL mode, so readers never block the writer of another process."""
    with KVStore(tmp_path / "c.sqlite") as kv:
        kv.put("k", {})
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_close_leaves_one_file(tmp_path: Path) -> None:
    """After close, the WAL is folded back: the store is a single file on disk."""
    kv = KVStore(tmp_path / "c.sqlite")
    kv.put_many((f"k{i}", {"i": i}) for i in range(500))
    kv.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.sqlite"]


def test_transaction_commits_all_puts_at_its_end(tmp_path: Path) -> None:
    """Inside `transaction()` nothing reaches the file until the block ends, then all of it."""
    path = tmp_path / "c.sqlite"
    with KVStore(path) as kv:
        kv.put("before", {"v": 0})
        with kv.transaction():
            kv.put("a", {"v": 1})
            kv.put("b", {"v": 2})
            assert set(_rows(path)) == {"before"} and kv.get("a") == {"v": 1}
        assert set(_rows(path)) == {"before", "a", "b"}


def test_transaction_that_raises_stores_nothing(tmp_path: Path) -> None:
    """An exception inside `transaction()` discards every put of the block."""
    with KVStore(tmp_path / "c.sqlite") as kv:
        with pytest.raises(RuntimeError), kv.transaction():
            kv.put("a", {"v": 1})
            raise RuntimeError("scoring failed")
        assert (kv.get("a"), len(kv)) == (None, 0)


def test_put_refuses_a_value_that_is_not_an_object(tmp_path: Path) -> None:
    """Values are JSON objects: a list is refused before anything is written."""
    with KVStore(tmp_path / "c.sqlite") as kv, pytest.raises(TypeError, match="dict"):
        kv.put("k", [1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", "42", b"\xff\xfe"])
def test_unreadable_value_reads_as_missing(tmp_path: Path, raw: Any) -> None:
    """A row whose value is not a JSON object (or not text) reads as None, to be recomputed."""
    path = tmp_path / "c.sqlite"
    with KVStore(path) as kv:
        kv.put("k", {"v": 1})
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE kv SET value = ? WHERE key = 'k'", (raw,))
    with KVStore(path) as kv:
        assert kv.get("k") is None


def test_file_that_is_not_a_database_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    """Garbage in the file: moved to NAME.damaged-STAMP, a fresh empty store is used."""
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database, just text " * 200)
    with KVStore(path) as kv:
        assert kv.get("k") is None
        kv.put("k", {"v": 1})
        assert kv.get("k") == {"v": 1}
        moved = kv.moved_aside
    assert len(moved) == 1 and moved[0].name.startswith("c.sqlite.damaged-")
    assert moved[0].read_bytes().startswith(b"this is not a database")


def test_database_with_damaged_pages_is_moved_aside(tmp_path: Path) -> None:
    """Overwritten pages fail quick_check at open: the file is set aside, not trusted."""
    path = tmp_path / "c.sqlite"
    with KVStore(path) as kv:
        kv.put_many((f"key{i:05d}", {"text": "x" * 200, "i": i}) for i in range(2000))
    data = bytearray(path.read_bytes())
    data[8192:8192 + 4096 * 4] = b"\x5a" * (4096 * 4)  # pages 3-6: b-tree pages, now noise
    path.write_bytes(bytes(data))
    with KVStore(path) as kv:
        assert kv.get("key00001") is None and len(kv.moved_aside) == 1


def test_damage_is_logged_as_a_warning(tmp_path: Path) -> None:
    """Moving a damaged file aside logs `kv_store_damaged` with both paths."""
    path, seen = tmp_path / "c.sqlite", []

    class Log:
        def warning(self, event: str, **kw: Any) -> None:
            seen.append((event, kw))

    path.write_bytes(b"\x00garbage" * 100)
    KVStore(path, log=Log()).get("k")
    assert [e for e, _ in seen] == ["kv_store_damaged"]
    assert seen[0][1]["path"] == str(path) and ".damaged-" in seen[0][1]["moved_to"]


def test_foreign_schema_is_moved_aside(tmp_path: Path) -> None:
    """A SQLite file with another table layout is not this store's: set aside, rebuilt."""
    path = tmp_path / "c.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE other (x)")
        conn.execute("PRAGMA user_version=7")
    with KVStore(path) as kv:
        kv.put("k", {"v": 1})
        assert kv.get("k") == {"v": 1} and len(kv.moved_aside) == 1


def test_missing_folder_is_created(tmp_path: Path) -> None:
    """The store creates its folder on first use."""
    with KVStore(tmp_path / "a" / "b" / "c.sqlite") as kv:
        kv.put("k", {"v": 1})
    assert (tmp_path / "a" / "b" / "c.sqlite").is_file()


def test_nothing_is_created_until_first_use(tmp_path: Path) -> None:
    """Constructing a store touches no file; the first get or put opens it."""
    KVStore(tmp_path / "c.sqlite")
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=20),
                       st.dictionaries(st.text(max_size=5),
                                       st.one_of(st.floats(allow_nan=False), st.text(), st.integers(),
                                                 st.booleans(), st.none())),
                       max_size=8))
def test_any_json_objects_round_trip(tmp_path_factory: Any, entries: dict[str, dict[str, Any]]) -> None:
    """Whatever JSON objects are put under whatever keys, a reopened store returns them."""
    path = tmp_path_factory.mktemp("kv") / "c.sqlite"
    with KVStore(path) as kv:
        kv.put_many(entries.items())
    with KVStore(path) as kv:
        assert {k: kv.get(k) for k in entries} == entries


WRITE_BATCHES = """
import sys
from runner.store.kv import KVStore
kv = KVStore(sys.argv[1])
prefix, batches, size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for b in range(batches):
    with kv.transaction():
        for i in range(size):
            kv.put(f"{prefix}{b}-{i}", {"b": b, "i": i})
kv.close()
"""


def _write_batches(path: Path, prefix: str, batches: int, size: int,
                   env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITE_BATCHES, str(path), prefix, str(batches),
                             str(size)], env=env, text=True, stderr=subprocess.PIPE)


def test_kill_mid_batch_leaves_earlier_batches_and_none_of_its_rows(tmp_path: Path, child_env: Any) -> None:
    """SIGKILL after 3 rows of batch 2 was written: batches 0-1 whole, no row of batch 2."""
    path, log = tmp_path / "c.sqlite", tmp_path / "crash.log"
    dry = _write_batches(tmp_path / "dry.sqlite", "k", 3, 5, child_env(RUNNER_CRASH_LOG=str(log)))
    assert dry.wait(timeout=30) == 0, dry.stderr.read() if dry.stderr else ""
    points = [line.split(" ", 1) for line in log.read_text().splitlines()]
    rows = [int(n) for n, label in points if label == "kv.row_written"]
    proc = _write_batches(path, "k", 3, 5, child_env(RUNNER_CRASH_AT=str(rows[10 + 2])))  # 3rd row of batch 2
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert Path(f"{path}-wal").exists()  # the killed writer never closed its WAL
    with KVStore(path) as kv:
        got = {(kv.get(f"k{b}-{i}") is not None) for b in range(2) for i in range(5)}
        assert got == {True} and len(kv) == 10 and kv.get("k2-0") is None


def test_kill_just_before_commit_stores_no_row_of_that_batch(tmp_path: Path, child_env: Any) -> None:
    """SIGKILL at `kv.before_commit` of the 2nd batch: every row written, none committed."""
    path, log = tmp_path / "c.sqlite", tmp_path / "crash.log"
    dry = _write_batches(tmp_path / "dry.sqlite", "k", 2, 4, child_env(RUNNER_CRASH_LOG=str(log)))
    assert dry.wait(timeout=30) == 0
    points = [line.split(" ", 1) for line in log.read_text().splitlines()]
    before = [int(n) for n, label in points if label == "kv.before_commit"]
    proc = _write_batches(path, "k", 2, 4, child_env(RUNNER_CRASH_AT=str(before[1])))
    assert proc.wait(timeout=30) == -signal.SIGKILL
    with KVStore(path) as kv:
        assert len(kv) == 4 and {kv.get(f"k0-{i}")["i"] for i in range(4)} == {0, 1, 2, 3}  # type: ignore[index]


def test_two_processes_writing_one_file_lose_nothing(tmp_path: Path, child_env: Any) -> None:
    """Two writer processes at once: the busy timeout serialises them, every entry lands."""
    path = tmp_path / "c.sqlite"
    procs = [_write_batches(path, prefix, 40, 25, child_env()) for prefix in ("p", "q")]
    outcomes = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    assert [rc for rc, _ in outcomes] == [0, 0], [err[-2000:] for _, err in outcomes]
    with KVStore(path) as kv:
        assert len(kv) == 2 * 40 * 25 and kv.get("q39-24") == {"b": 39, "i": 24}


def test_open_waits_while_another_connection_holds_the_lock(tmp_path: Path) -> None:
    """A store opened while another connection holds an exclusive lock waits, then works."""
    import threading

    path = tmp_path / "c.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE unrelated_lock_holder (x)")
    release = threading.Timer(0.5, lambda: holder.execute("ROLLBACK"))
    release.start()
    try:
        with KVStore(path, busy_timeout_s=20) as kv:
            kv.put("k", {"v": 1})
            assert kv.get("k") == {"v": 1} and kv.moved_aside == []
    finally:
        release.join()
        holder.close()
