"""Python phases of `specs/example_python.yaml`: batches, metrics a gate checks, reuse.

A toy task that runs anywhere in seconds: draw noisy "documents", score them against a
threshold, summarise. Each phase is an ordinary function of `ctx` (see ../shared/CONTRACT.md).
`make_items` and `score` declare a pydantic model of their `with:` (`fn.options = Model`), so
`runner validate` checks those keys, types and ranges as it does a built-in phase's, and the
phase reads the validated values from `ctx.options`.
"""

from __future__ import annotations

import json
import random
import statistics

from pydantic import BaseModel, ConfigDict, Field


class MakeItemsOptions(BaseModel):
    """`with:` of make_items."""

    model_config = ConfigDict(extra="forbid", strict=True)
    count: int = Field(ge=1)
    batch_size: int = Field(25, ge=1)


class ScoreOptions(BaseModel):
    """`with:` of score."""

    model_config = ConfigDict(extra="forbid", strict=True)
    threshold: float = Field(ge=0.0, le=1.0)
    max_length: int = Field(ge=1)
    batch_size: int = Field(25, ge=1)


def make_items(ctx) -> dict:
    """Draw `count` items in batches; each batch's numbers come from its own seed."""
    count, size = ctx.options.count, ctx.options.batch_size
    for batch in ctx.batches(range(count), size=size):
        rng = random.Random(batch.seed)
        batch.write({"id": i, "length": rng.randint(5, 60), "quality": round(rng.random(), 6)}
                    for i in batch.items)
    return {"count": count}


make_items.options = MakeItemsOptions


def score(ctx) -> dict:
    """Accept items whose quality reaches `threshold` and whose length fits `max_length`."""
    items = ctx.input("make_items")
    threshold, max_length = ctx.options.threshold, ctx.options.max_length
    accepted = 0
    for batch in ctx.batches(items, size=ctx.options.batch_size):
        out = []
        for item in batch.items:
            ok = item["quality"] >= threshold and item["length"] <= max_length
            accepted += ok
            out.append({**item, "accepted": ok})
        batch.write(out)
    return {"pass_rate": accepted / len(items) if items else 0.0,
            "accepted": accepted,
            "median_length": statistics.median(r["length"] for r in items) if items else 0}


score.options = ScoreOptions


def summarize(ctx) -> dict:
    """Write the accepted items' summary next to the records."""
    scored = ctx.input("score")
    kept = [r for r in scored if r["accepted"]]
    (ctx.output_dir / "summary.json").write_text(json.dumps({"kept": len(kept)}) + "\n")
    for batch in ctx.batches(kept, size=100):
        batch.write(batch.items)
    return {"kept": len(kept)}
