"""Shard-aware Python phases for the shard executor tests."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path


def draw(ctx) -> dict:
    """Draw one number per item of this shard's share, in batches; counts are additive."""
    items = ctx.shard_items(range(int(ctx.params["count"])))
    kill_marker = ctx.params.get("kill_marker")
    drawn = 0
    for batch in ctx.batches(items, size=int(ctx.params["batch_size"])):
        # The test's worker death: shard 1 dies (SIGKILL, no cleanup) in its third batch, once.
        if kill_marker and ctx.shard == 1 and batch.index == 2 and not Path(kill_marker).exists():
            Path(kill_marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        rng = random.Random(batch.seed)
        batch.write({"id": i, "shard": ctx.shard, "x": rng.random()} for i in batch.items)
        drawn += len(batch.items)
    return {"generated": len(ctx.records()), "drawn_now": drawn}


def total(ctx) -> dict:
    """Read the sharded phase's joined records."""
    records = ctx.input("draw")
    return {"records": len(records), "distinct": len({r["id"] for r in records})}
