"""The `merge` phase: join sharded Stage-1 outputs, check them, deduplicate, recompute QC.

Roles as in `qc` (`phases: {instructions, instruction_critic, responses, pair_critic}` →
phase names). For every role phase that ran sharded, the records the engine joined (shard 0,
then 1, ...) are checked against the shards themselves: the count must equal the sum of the
shards' record counts, the sha256 must equal that of the shards' files concatenated in order,
and every additive metric the shards reported (counts: `generated`, `clean`, `runaway`, ...)
must equal the same count recomputed on the joined records. Then the final pairs — the pair
critic's accepted records — are deduplicated by instruction (exact and normalised, first one
kept, in the fixed order) and QC is recomputed on the merged set.

Metrics: the QC metrics of `qc.py` over the joined sets, `merged` (pairs kept),
`duplicates_removed`, `shards_checked`, and `additive_<role>_<metric>` for every checked sum.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.errors import PhaseError
from runner.llm.builtin import options_of
from runner.llm.stage1.options import MergeOptions
from runner.llm.stage1.qc import compute_metrics
from runner.llm.text.cleaning import CLASSES, normalise

__all__ = ["ADDITIVE_RECOUNTS", "merge", "recount"]

ROLES = ("instructions", "instruction_critic", "responses", "pair_critic")

# How each additive shard metric is recomputed from records; the same definitions the
# generation and critic phases use, so a mismatch means lost or repeated records.
ADDITIVE_RECOUNTS: dict[str, Callable[[list[dict[str, Any]]], int]] = {
    "generated": lambda rs: len(rs),
    "scored": lambda rs: len(rs),
    "accepted": lambda rs: sum(r.get("verdict") == "accept" for r in rs),
    "rejected": lambda rs: sum(r.get("verdict") == "reject" for r in rs),
    **{cls: (lambda c: lambda rs: sum(r.get("class") == c for r in rs))(cls) for cls in CLASSES},
}


def recount(metric: str, records: list[dict[str, Any]]) -> int | None:
    """The additive metric `metric` recomputed from records (None: not one we recount)."""
    fn = ADDITIVE_RECOUNTS.get(metric)
    return None if fn is None else int(fn(records))


def _check_shards(phase: str, folder: Path, records_path: Path, records: list[dict[str, Any]],
                  role: str, metrics: dict[str, float]) -> int:
    """Counts, content hash and additive metrics of a sharded phase; number of shards."""
    dones = sorted((folder / "shards").glob("*/done.json"))
    if not dones:
        return 0
    joined = b"".join((d.parent / "records.jsonl").read_bytes() for d in dones)
    if hashlib.sha256(joined).hexdigest() != hashlib.sha256(records_path.read_bytes()).hexdigest():
        raise PhaseError(phase, f"{records_path}: content differs from its shards joined in order")
    shard_metrics = [json.loads(d.read_text(encoding="utf-8")) for d in dones]
    expected = sum(int(s["records"]) for s in shard_metrics)
    if expected != len(records):
        raise PhaseError(phase, f"{records_path}: {len(records)} records, its shards hold {expected}")
    for name in sorted({k for s in shard_metrics for k in s["metrics"]}):
        again = recount(name, records)
        if again is None:
            continue
        total = sum(s["metrics"].get(name, 0) for s in shard_metrics)
        if again != total:
            raise PhaseError(phase, f"{role}: '{name}' is {again} on the joined records but the shards sum to {total}")
        metrics[f"additive_{role}_{name}"] = float(total)
    return len(dones)


def merge(ctx: Any) -> dict[str, float]:
    """Join, check, deduplicate and re-measure the sharded outputs."""
    o = options_of(ctx, MergeOptions)
    roles: dict[str, str] = {str(k): v for k, v in o.phases.items()}  # checked by MergeOptions
    metrics: dict[str, float] = {}
    by_role: dict[str, list[dict[str, Any]]] = {}
    shards = 0
    for role, name in roles.items():
        records = ctx.input(name)
        folder = ctx.input_dir(name)
        shards += _check_shards(ctx.phase, folder, folder / "records.jsonl", records, role, metrics)
        by_role[role] = records
    seen: set[str] = set()
    kept: list[dict[str, Any]] = []
    for record in by_role["pair_critic"]:
        if not record.get("keep", True) or not record.get("instruction"):
            continue
        key = normalise(record["instruction"])
        if key in seen:
            continue
        seen.add(key)
        kept.append(record)
    accepted = sum(1 for r in by_role["pair_critic"] if r.get("keep", True) and r.get("instruction"))
    for batch in ctx.batches(kept, size=o.batch_size):
        batch.write(batch.items)
    metrics.update(compute_metrics(by_role, {name: by_role[role] for role, name in roles.items()}))
    metrics.update({"merged": float(len(kept)), "duplicates_removed": float(accepted - len(kept)),
                    "shards_checked": float(shards)})
    ctx.log.info("merge_done", merged=len(kept), duplicates_removed=accepted - len(kept), shards=shards)
    return metrics
