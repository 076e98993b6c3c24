"""Adapters for the GPU pilot benchmark on a random-initialised model.

A random-initialised model writes noise: no output reaches a delimiter, so the cleaning step
keeps nothing and every later phase would have no work. To push the full load through every
built-in phase on the GPU (dtype, placement, batching, critic, QC), these two phases pass the
noisy text on as if it were kept. They exist for benchmarking only; a real pilot never uses them. `batch_size` (default 256)
sets how many records one batch file holds: the 15k run passes a large one, since an unsharded
phase keeps one file per batch.
"""

from __future__ import annotations


def keep_instructions(ctx) -> dict:
    """Every generated instruction text, kept (noise included), up to `count`."""
    rows = [r for r in ctx.input(ctx.params["source"]) if r.get("text") or r.get("instruction")]
    rows = rows[: int(ctx.params["count"])]
    for batch in ctx.batches(rows, size=int(ctx.params.get("batch_size", 256))):
        batch.write({"id": r["id"], "instruction": (r.get("instruction") or r["text"]).strip()[:400] or "?",
                     "keep": True} for r in batch.items)
    return {"count": len(rows)}


def keep_pairs(ctx) -> dict:
    """Every generated response, kept with its instruction (noise included)."""
    rows = [r for r in ctx.input(ctx.params["source"]) if r.get("instruction")]
    for batch in ctx.batches(rows, size=int(ctx.params.get("batch_size", 256))):
        batch.write({"id": r["id"], "instruction": r["instruction"],
                     "response": (r.get("response") or r.get("text") or "").strip()[:600] or "?",
                     "keep": True} for r in batch.items)
    return {"count": len(rows)}
