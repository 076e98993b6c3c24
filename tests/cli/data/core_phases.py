"""Python phases of the specs in tests/cli/data (the end-to-end tests of the core).

Every phase is deterministic: its records depend only on batch seeds and its inputs, so a
resumed run's records must equal an uninterrupted run's byte for byte.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from runner.errors import PhaseError


def draw(ctx) -> dict:
    """`count` items in batches of `batch_size`, each batch from its own seed."""
    count, size = int(ctx.params["count"]), int(ctx.params["batch_size"])
    for batch in ctx.batches(range(count), size=size):
        rng = random.Random(batch.seed)
        batch.write({"id": i, "batch": batch.index, "x": rng.random(), "n": rng.randint(0, 999)}
                    for i in batch.items)
    return {"count": count}


def transform(ctx) -> dict:
    """Read `draw` and derive one record per item, in batches."""
    items = ctx.input("draw")
    total = 0.0
    for batch in ctx.batches(items, size=int(ctx.params["batch_size"])):
        rng = random.Random(batch.seed)
        out = []
        for item in batch.items:
            y = round(item["x"] * 100 + rng.random(), 6)
            out.append({"id": item["id"], "batch": batch.index, "y": y})
        batch.write(out)
    for item in items:
        total += item["x"]
    return {"count": len(items), "mean_x": total / len(items) if items else 0.0}


def combine(ctx) -> dict:
    """Join `draw`, `transform` and the shell phase's records, in batches."""
    drawn = {r["id"]: r for r in ctx.input("draw")}
    moved = ctx.input("transform")
    shell = ctx.input("shell_stats")
    salt = shell[0]["salt"] if shell else 0
    for batch in ctx.batches(moved, size=int(ctx.params["batch_size"])):
        batch.write({"id": r["id"], "batch": batch.index, "z": round(r["y"] + drawn[r["id"]]["n"] + salt, 6)}
                    for r in batch.items)
    return {"count": len(moved), "shell_records": len(shell)}


def make_items(ctx) -> dict:
    """`count` items with a quality score each."""
    count, size = int(ctx.params["count"]), int(ctx.params["batch_size"])
    for batch in ctx.batches(range(count), size=size):
        rng = random.Random(batch.seed)
        batch.write({"id": i, "quality": round(rng.random(), 6)} for i in batch.items)
    return {"count": count}


def score(ctx) -> dict:
    """Accept the items of `make_items` whose quality reaches `threshold`."""
    items = ctx.input("make_items")
    threshold = float(ctx.params["threshold"])
    accepted = 0
    for batch in ctx.batches(items, size=4):
        out = [{**r, "accepted": r["quality"] >= threshold} for r in batch.items]
        accepted += sum(r["accepted"] for r in out)
        batch.write(out)
    return {"pass_rate": accepted / len(items) if items else 0.0, "accepted": accepted}


def summarize(ctx) -> dict:
    """Count the accepted records of `score`."""
    kept = [r for r in ctx.input("score") if r["accepted"]]
    return {"kept": len(kept)}


def nap(ctx) -> dict:
    """Sleep `seconds` (for lock tests: the run stays held meanwhile); a later attempt of the
    same instance (after a kill) does not sleep again."""
    marker = ctx.output_dir / "napping"
    first = not marker.exists()
    marker.write_text("yes\n")
    if first:
        time.sleep(float(ctx.params["seconds"]))
    return {"slept": float(ctx.params["seconds"])}


def read_shell(ctx) -> dict:
    """Read the shell phase's records and metrics-derived records through ctx.input."""
    records = ctx.input("shell")
    for batch in ctx.batches(records, size=10):
        batch.write({**r, "seen_by": ctx.phase} for r in batch.items)
    return {"shell_records": len(records), "shell_value_sum": sum(r["value"] for r in records)}


def flaky(ctx) -> dict:
    """Raise `error` (an exception class name) on the first `failures` calls, then succeed."""
    counter = ctx.output_dir / "calls.txt"
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(f"{calls}\n")
    if calls <= int(ctx.params["failures"]):
        exc = {"ValueError": ValueError, "KeyError": KeyError, "RuntimeError": RuntimeError}[ctx.params["error"]]
        raise exc(f"flaky failure {calls}")
    return {"calls": calls}


def needs_marker(ctx) -> dict:
    """Fail until the file `marker` exists (the test creates it to 'fix' the phase)."""
    marker = Path(ctx.params["marker"])
    if not marker.exists():
        raise RuntimeError(f"marker file {marker} is missing")
    return {"fixed": 1}


def gpu_work(ctx) -> dict:
    """Pretend to use CUDA for `seconds` (for budget accounting)."""
    ctx.mark_cuda()
    time.sleep(float(ctx.params["seconds"]))
    return {"done": 1}


def noop(ctx) -> dict:
    """Nothing to do."""
    return {"ok": 1}


def strict_mode(ctx) -> dict:
    """Refuse a `mode` other than quick or thorough, as a built-in phase refuses a bad `with:`
    value (for the amend tests: a spec mistake that only shows at run time)."""
    mode = ctx.params["mode"]
    if mode not in ("quick", "thorough"):
        raise PhaseError(ctx.phase, f"with.mode must be 'quick' or 'thorough', got {mode!r}")
    kept = [r for r in ctx.input("score") if r["accepted"]]
    for batch in ctx.batches(kept, size=4):
        batch.write({"id": r["id"], "mode": mode} for r in batch.items)
    return {"kept": len(kept)}
