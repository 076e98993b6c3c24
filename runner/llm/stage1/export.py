"""The `export` phase: the kept pairs of an earlier phase as a dataset people train on.

`with: {source: PHASE, dir: FOLDER, license: ID}`. `source` (default: the latest earlier
phase of pair-critic or response records; a `merge` writes pair-critic records) is read
whole; a record counts as a kept pair when its `keep` is not false and it has both an
`instruction` and a `response`. Each becomes one row: `id`, `messages` (the instruction as
the user's turn, then the response as the assistant's), `prompt`, `completion` and
`provenance` (run, iteration, phase, spec sha256, git commit, model hash, batch seed of the
record, and the settings of the phase that wrote it as a JSON string, so every row has the same
schema). The rows go to `output_dir/dataset/`: `train.jsonl`, `train.parquet` (written by
pyarrow) and `README.md`, a dataset card whose YAML front matter names the train split for
Hugging Face `datasets` (`dataset_card.py`). They are also this phase's records, so a later
phase (`sft`) reads exactly what was exported.

`dir` (relative to the spec's folder) publishes the same files to a folder outside the run.
A folder that holds anything but an export of this run and phase is refused before anything
is written; an export of the same run and phase is replaced as a whole: the new dataset is
built in a temporary folder beside it and swapped in by one rename (`RENAME_EXCHANGE` where
the kernel has it), so a reader sees the old dataset or the new one, never a mix.
Metrics: `rows`, `source_records`, `not_kept`, `incomplete`.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from runner.errors import PhaseError
from runner.llm.builtin import default_source, options_of
from runner.llm.stage1.dataset_card import render_card
from runner.llm.stage1.options import ExportOptions
from runner.store.atomic import fsync_dir

__all__ = ["MARKER", "check_target", "export", "kept_pairs", "replace_folder", "to_row"]

MARKER = ".runner-export.json"  # who wrote a dataset folder: run id and phase
_PROVENANCE_KEYS = ("run_id", "iteration", "phase", "spec_sha256", "git_commit", "model_hash",
                    "batch_seed")


def kept_pairs(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, int]:
    """(the kept pairs, records with keep false, kept records without instruction or response)."""
    pairs, not_kept, incomplete = [], 0, 0
    for r in records:
        if r.get("keep", True) is False:
            not_kept += 1
        elif isinstance(r.get("instruction"), str) and r["instruction"] and \
                isinstance(r.get("response"), str) and r["response"]:
            pairs.append(r)
        else:
            incomplete += 1
    return pairs, not_kept, incomplete


def to_row(record: dict[str, Any]) -> dict[str, Any]:
    """One dataset row of a kept pair (see the module docstring)."""
    prov = record.get("provenance") or {}
    provenance = {k: prov.get(k) for k in _PROVENANCE_KEYS}
    provenance["settings"] = json.dumps(prov.get("params") or {}, sort_keys=True, default=str)
    return {
        "id": str(record.get("id")),
        "messages": [{"role": "user", "content": record["instruction"]},
                     {"role": "assistant", "content": record["response"]}],
        "prompt": record["instruction"],
        "completion": record["response"],
        "provenance": provenance,
    }


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa  # noqa: PLC0415 - only an export needs it; `runner validate` stays light
    import pyarrow.parquet as pq  # noqa: PLC0415

    text = pa.string()
    schema = pa.schema([
        ("id", text),
        ("messages", pa.list_(pa.struct([("role", text), ("content", text)]))),
        ("prompt", text),
        ("completion", text),
        ("provenance", pa.struct([("run_id", text), ("iteration", pa.int64()), ("phase", text),
                                  ("spec_sha256", text), ("git_commit", text),
                                  ("model_hash", text), ("batch_seed", pa.int64()),
                                  ("settings", text)])),
    ])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _owner(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_target(folder: Path, run_id: str, phase: str, ctx_phase: str) -> None:
    """Refuse a folder holding anything but an export of this run and phase."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise PhaseError(ctx_phase, f"{folder} is a file, not a dataset folder; choose another with.dir")
    if not any(folder.iterdir()):
        return
    owner = _owner(folder)
    if owner is None:
        raise PhaseError(ctx_phase, f"{folder} holds files that no export wrote; refusing to replace "
                         "them: choose another with.dir or empty that folder")
    if (owner.get("run_id"), owner.get("phase")) != (run_id, phase):
        raise PhaseError(ctx_phase, f"{folder} holds the dataset of run '{owner.get('run_id')}' phase "
                         f"'{owner.get('phase')}'; refusing to replace it: choose another with.dir "
                         "or remove that folder")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def replace_folder(built: Path, target: Path) -> None:
    """Put the folder `built` at `target`, replacing what is there in one rename."""
    if not target.exists():
        os.rename(built, target)
    elif _exchange(built, target):
        shutil.rmtree(built)  # now the old dataset
    else:  # no atomic exchange here (not Linux, or the file system lacks it): two renames
        old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
        os.rename(target, old)
        os.rename(built, target)
        shutil.rmtree(old)
    fsync_dir(target.parent)


def _publish(files: dict[str, bytes], rows: list[dict[str, Any]], target: Path) -> None:
    """Write the dataset into a temporary folder beside `target`, then swap it in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a killed attempt
        shutil.rmtree(stale, ignore_errors=True)
    built = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")
    built.mkdir()
    try:
        for name, data in files.items():
            (built / name).write_bytes(data)
        _write_parquet(built / "train.parquet", rows)
        for f in built.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(built)
        replace_folder(built, target)
    finally:
        shutil.rmtree(built, ignore_errors=True)


def _dir_of(ctx: Any, o: ExportOptions) -> Path | None:
    if o.dir is None:
        return None
    path = Path(o.dir).expanduser()
    spec_dir = getattr(ctx, "spec_dir", None)
    if not path.is_absolute() and spec_dir is not None:
        path = Path(spec_dir) / path
    return path.resolve()


def export(ctx: Any) -> dict[str, float]:
    """Write the kept pairs of `with.source` as train.jsonl, train.parquet and a dataset card."""
    o = options_of(ctx, ExportOptions)
    source = str(o.source or default_source(ctx, ("pair_critic", "responses"), ctx.phase))
    license_id = o.license
    published = _dir_of(ctx, o)
    if published is not None:  # refused before anything is written
        check_target(published, ctx.run_id, ctx.phase, ctx.phase)
    records = list(ctx.input(source))
    pairs, not_kept, incomplete = kept_pairs(records)
    if not pairs:
        raise PhaseError(ctx.phase, f"source '{source}' has no kept record with an instruction and "
                         f"a response ({len(records)} records, {not_kept} not kept); nothing to export")
    rows = [to_row(r) for r in pairs]
    for batch in ctx.batches(rows, size=1000):  # the rows are this phase's records too
        batch.write(batch.items)
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    counts = {"rows": len(rows), "source_records": len(records), "not_kept": not_kept,
              "incomplete": incomplete}
    card = render_card(ctx, source, counts, license_id.strip(), pairs,
                       {"train.jsonl": hashlib.sha256(jsonl).hexdigest()})
    marker = json.dumps({"run_id": ctx.run_id, "phase": ctx.phase, "iteration": ctx.iteration,
                         "rows": len(rows)}, indent=1).encode()
    files = {"train.jsonl": jsonl, "README.md": card.encode(), MARKER: marker}
    targets = [Path(ctx.output_dir) / "dataset"] + ([published] if published is not None else [])
    for target in targets:
        check_target(target, ctx.run_id, ctx.phase, ctx.phase)
        _publish(files, rows, target)
    ctx.log.info("export_done", phase=ctx.phase, source=source, rows=len(rows),
                 dataset=str(targets[-1]))
    return {k: float(v) for k, v in counts.items()}
