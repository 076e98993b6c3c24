"""A phase for the GPU SFT benchmark: procedural instruction/response pairs (no model needed).

Draws pairs from the same generator that built the tiny fixture model's corpus
(`scripts/tiny_corpus.py`), so the SFT benchmark trains on realistic-length text without
first running generation on a random-initialised model (whose text is noise).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from tiny_corpus import make_pair


def pairs(ctx) -> dict:
    """`count` pairs in batches, each batch seeded from its batch seed."""
    for batch in ctx.batches(range(int(ctx.params["count"])), size=500):
        rng = random.Random(batch.seed)
        out = []
        for i in batch.items:
            instruction, response = make_pair(rng)
            out.append({"id": f"p{i:06d}", "instruction": instruction, "response": response, "keep": True})
        batch.write(out)
    return {"count": int(ctx.params["count"])}
