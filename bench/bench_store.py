"""Cost of the store's durable writes: one run-state transition and one batch commit.

A "transition" is what the engine does per event: a journal append (write + fsync) and a
`write_snapshot` of the machine state (temp file, fsync, rename, fsync of the folder). Also
shown: the snapshot written with `durable=False` (no fsyncs), an option for a cache. The
state is a realistic ~20 KB dict (params, 12 phase instances with metrics, decisions). A batch
commit is 32 small records written with `write_atomic`.

Usage: python bench/bench_store.py [--reps 200] [--dir PATH]
(`--dir` picks the file system measured; the default is a temp folder under ./state, i.e. the
disk runs are stored on, not /tmp, which may be a RAM disk.)
"""

from __future__ import annotations

import argparse
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
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
