"""Python phases of `specs/example_python.yaml`: batches, metrics a gate checks, reuse.

A toy task that runs anywhere in seconds: draw noisy "documents", score them against a
threshold, summarise. Each phase is an ordinary function of `ctx` (see ../shared/CONTRACT.md).
"""

from __future__ import annotations

import json
import random
import statistics


def make_items(ctx) -> dict:
    """Draw `count` items in batches; each batch's numbers come from its own seed."""
    count, size = int(ctx.params["count"]), int(ctx.params["batch_size"])
    for batch in ctx.batches(range(count), size=size):
        rng = random.Random(batch.seed)
        batch.write({"id": i, "length": rng.randint(5, 60), "quality": round(rng.random(), 6)}
                    for i in batch.items)
    return {"count": count}


def score(ctx) -> dict:
    """Accept items whose quality reaches `threshold` and whose length fits `max_length`."""
    items = ctx.input("make_items")
    threshold, max_length = float(ctx.params["threshold"]), int(ctx.params["max_length"])
    accepted = 0
    for batch in ctx.batches(items, size=int(ctx.params["batch_size"])):
        out = []
        for item in batch.items:
            ok = item["quality"] >= threshold and item["length"] <= max_length
            accepted += ok
            out.append({**item, "accepted": ok})
        batch.write(out)
    return {"pass_rate": accepted / len(items) if items else 0.0,
            "accepted": accepted,
            "median_length": statistics.median(r["length"] for r in items) if items else 0}


def summarize(ctx) -> dict:
    """Write the accepted items' summary next to the records."""
    scored = ctx.input("score")
    kept = [r for r in scored if r["accepted"]]
    (ctx.output_dir / "summary.json").write_text(json.dumps({"kept": len(kept)}) + "\n")
    for batch in ctx.batches(kept, size=100):
        batch.write(batch.items)
    return {"kept": len(kept)}
