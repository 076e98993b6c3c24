"""Cost of the store's durable writes: one run-state transition and one batch commit.

A "transition" is what the engine does per event: a journal append (write + fsync) and a
`write_snapshot` of the machine state (temp file, fsync, rename, fsync of the folder). Also
shown: the snapshot written with `durable=False` (no fsyncs), an option for a cache. The
state is a realistic ~20 KB dict (params, 12 phase instances with metrics, decisions). A batch
commit is 32 small records written with `write_atomic`.

Then the critic's score cache, `--cache-items` items (default 10,000): put in batches of 64
(one transaction per batch, as `score_cached` commits) and get each once, in the SQLite store
(`runner.store.kv.KVStore`) against the one-JSON-file-per-score cache of earlier versions
(reproduced here as it was: `root/ab/<key>.json`, temp file + rename, no fsync), with the
number of files each leaves.

Usage: python bench/bench_store.py [--reps 200] [--dir PATH] [--cache-items 10000]
(`--dir` picks the file system measured; the default is a temp folder under ./state, i.e. the
disk runs are stored on, not /tmp, which may be a RAM disk.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner.store.atomic import dumps_json
from runner.store.batches import BatchStore
from runner.store.kv import KVStore
from runner.store.run_folder import RunFolder


def realistic_state() -> dict[str, object]:
    """A machine state of roughly the size a Stage-1 run reaches after a few iterations."""
    phases = [
        {
            "name": f"phase_{i % 6}", "iteration": 1 + i // 6, "status": "succeeded",
            "started": "2025-01-01T00:00:00.000000Z", "ended": "2025-01-01T00:10:00.000000Z",
            "attempts": 1, "error": None, "reused_from": None,
            "metrics": {f"metric_{k}": 0.123456789 * k for k in range(24)},
            "params_sha256": "ab" * 32, "output_dir": f"phases/phase_{i % 6}.i{1 + i // 6}",
        }
        for i in range(12)
    ]
    params = {
        "response": {"temperature": 0.4, "max_new_tokens": 128, "top_p": 0.95},
        "instructions": {"count": 2000, "topics": [f"topic number {k}" for k in range(150)]},
        "critic": {"threshold": 0.7, "rubric": "x" * 2000},
    }
    decisions = [
        {"gate": "pilot_qc", "iteration": i, "decision": "iterate", "reviewer": "alice",
         "reason": "runaway rate too high " * 5, "set": {"response.temperature": 0.3},
         "override_checks": False, "at": "2025-01-01T00:00:00.000000Z"}
        for i in range(1, 3)
    ]
    return {"run_id": "bench", "status": "running", "iteration": 3, "seq": 120,
            "params": params, "phases": phases, "decisions": decisions, "pending_gate": None}


class PerFileCache:
    """The critic's score cache before the SQLite store, as it was: one JSON file per key."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, float] | None:
        try:
            return json.loads(self._file(key).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: dict[str, float]) -> None:
        path = self._file(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value), encoding="utf-8")
        os.replace(tmp, path)


def bench_cache(work: Path, items: int) -> list[tuple[str, float, float, int]]:
    """(name, put s, get s, files left) for the SQLite cache and the per-file one."""
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(items)]
    value = {"logprob_a": -0.6931, "logprob_b": -1.3863, "p_a": 0.6667, "margin": 0.6931}
    out = []
    kv_dir, file_dir = work / "cache-sqlite", work / "cache-files"
    kv = KVStore(kv_dir / "scores.sqlite")
    t0 = time.perf_counter()
    for start in range(0, items, 64):
        with kv.transaction():
            for k in keys[start:start + 64]:
                kv.put(k, value)
    t1 = time.perf_counter()
    assert all(kv.get(k) == value for k in keys)
    t2 = time.perf_counter()
    kv.close()
    out.append(("sqlite (one transaction / 64)", t1 - t0, t2 - t1, sum(1 for _ in kv_dir.rglob("*"))))
    files = PerFileCache(file_dir)
    t0 = time.perf_counter()
    for k in keys:
        files.put(k, value)
    t1 = time.perf_counter()
    assert all(files.get(k) == value for k in keys)
    t2 = time.perf_counter()
    left = sum(1 for p in file_dir.rglob("*") if p.is_file())
    out.append(("one JSON file per key (before)", t1 - t0, t2 - t1, left))
    return out


def measure(fn: Callable[[int], None], reps: int) -> list[float]:
    """Per-call wall times in ms, after 10 warm-up calls."""
    for i in range(10):
        fn(-1 - i)
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--dir", default="state")
    parser.add_argument("--cache-items", type=int, default=10_000)
    args = parser.parse_args()
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bench-store-", dir=args.dir))
    try:
        folder = RunFolder(work, "bench-run")
        folder.create()
        journal = folder.journal()
        state = realistic_state()
        state_kb = len(dumps_json(state)) / 1024

        def append_only(i: int) -> None:
            journal.append({"type": "PhaseSucceeded", "phase": "train", "iteration": 1,
                            "metrics": {"loss": 0.5, "i": i}})

        def snapshot_only(i: int) -> None:
            state["seq"] = i
            folder.write_snapshot(state)

        def snapshot_cache(i: int) -> None:
            state["seq"] = i
            folder.write_snapshot(state, durable=False)

        def transition(i: int) -> None:
            append_only(i)
            snapshot_only(i)

        def transition_cache(i: int) -> None:
            append_only(i)
            snapshot_cache(i)

        store = BatchStore(folder.phase_dir("bench", 1))
        small = [{"id": k, "text": f"item {k} é", "score": k / 32} for k in range(32)]
        next_index = iter(range(10**9))

        def batch_commit(i: int) -> None:
            store.commit(next(next_index), small)

        rows = [
            ("journal append (fsync)", measure(append_only, args.reps)),
            (f"write_snapshot {state_kb:.1f} KB", measure(snapshot_only, args.reps)),
            ("transition = append + snapshot", measure(transition, args.reps)),
            ("write_snapshot, durable=False", measure(snapshot_cache, args.reps)),
            ("transition, snapshot durable=False", measure(transition_cache, args.reps)),
            ("batch commit, 32 records", measure(batch_commit, args.reps)),
        ]
        print(f"store write costs, {args.reps} reps, file system of {work.parent.resolve()}")
        print(f"{'operation':<34} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}")
        for name, times in rows:
            p90 = statistics.quantiles(times, n=10)[-1]
            print(f"{name:<34} {statistics.median(times):>10.3f} {p90:>8.3f} {min(times):>8.3f}")
        n = args.cache_items
        print(f"\ncritic score cache, {n} items: put (batches of 64), then get each once")
        print(f"{'cache':<34} {'put s':>8} {'get s':>8} {'put us/item':>12} {'get us/item':>12} {'files':>7}")
        for name, put_s, get_s, files in bench_cache(work, n):
            print(f"{name:<34} {put_s:>8.3f} {get_s:>8.3f} {put_s / n * 1e6:>12.1f} "
                  f"{get_s / n * 1e6:>12.1f} {files:>7}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
