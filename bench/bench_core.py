"""Benchmark of the core's durability costs (issue 2's performance aims).

Measures, on this machine's disk:
  * one transition through the engine (pure apply + fsync'd journal line + atomic snapshot),
    over every transition of a run driven to 100 iterations (so late snapshots are big);
  * one batch commit (32 small records, atomic file + fsync);
  * `runner status RUN_ID` (a fresh process, as a user runs it) on that 100-iteration run.

Run: python bench/bench_core.py [--iterations 100] [--append-results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner.console.logs import configure_logging
from runner.engine.driver import RunEngine
from runner.review.decisions import DecisionRequest, to_record
from runner.spec import load_spec
from runner.store.batches import BatchStore
from runner.store.journal import utc_now

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "example_python.yaml"


def drive_iterations(state_dir: Path, iterations: int) -> tuple[str, list[float]]:
    """Run the example spec and ITERATE at its gate until `iterations` is reached."""
    spec = load_spec(str(SPEC), ["count=50"])
    engine = RunEngine.start(spec, state_dir, "bench-100")
    costs: list[float] = []
    emit = engine._emit

    def timed(event: object) -> None:
        t0 = time.perf_counter()
        emit(event)
        costs.append(time.perf_counter() - t0)

    engine._emit = timed  # type: ignore[method-assign]
    engine.drive(wait=False)
    for i in range(1, iterations):
        threshold = round(0.3 + 0.001 * i, 4)  # a new value each time, so `score` re-runs
        request = DecisionRequest(gate="review", decision="iterate", reviewer="bench",
                                  reason=f"iteration {i}", set={"scoring.threshold": threshold})
        record = to_record(request, engine.st.iteration, utc_now())
        engine.folder.record_decision("review", engine.st.iteration, record.model_dump(mode="json"))
        engine.drive(wait=False)
    engine.close()
    return engine.folder.run_id, costs


def batch_commit_costs(folder: Path, reps: int) -> list[float]:
    store = BatchStore(folder)
    records = [{"id": i, "text": f"record {i} " * 4, "score": i / 7} for i in range(32)]
    costs = []
    for index in range(reps):
        t0 = time.perf_counter()
        store.commit(index, records)
        costs.append(time.perf_counter() - t0)
    return costs


def status_costs(state_dir: Path, run_id: str, reps: int) -> list[float]:
    costs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "runner", "status", run_id, "--state-dir", str(state_dir)],
                       check=True, capture_output=True)
        costs.append(time.perf_counter() - t0)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--append-results", action="store_true")
    args = parser.parse_args()
    configure_logging(console=open("/dev/null", "w"))
    with tempfile.TemporaryDirectory(dir=ROOT / "state") as tmp:
        state_dir = Path(tmp)
        run_id, transitions = drive_iterations(state_dir, args.iterations)
        batches = batch_commit_costs(state_dir / "batches-bench", 200)
        status = status_costs(state_dir, run_id, 5)
    rows = [
        ("transition (journal + snapshot)", statistics.median(transitions) * 1e3, "ms", "< 10 ms", len(transitions)),
        ("batch commit (32 records)", statistics.median(batches) * 1e3, "ms", "< 5 ms", len(batches)),
        (f"runner status, {args.iterations} iterations", statistics.median(status), "s", "< 0.5 s", len(status)),
    ]
    print(f"{'what':<36} {'median':>10}  aim       n")
    for what, value, unit, aim, n in rows:
        print(f"{what:<36} {value:>8.3f} {unit:<2} {aim:<9} {n}")
    if args.append_results:
        stamp = dt.date.today().isoformat()
        lines = [f"\n## Core durability ({stamp}, {platform.node()}, {platform.machine()}, 2-core sandbox VM)\n",
                 "Command: `python bench/bench_core.py --append-results`\n",
                 "| what | median | aim | samples |", "|---|---|---|---|"]
        lines += [f"| {w} | {v:.3f} {u} | {a} | {n} |" for w, v, u, a, n in rows]
        with open(ROOT / "bench" / "HISTORY.md", "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
