"""A small real `ctx` stand-in for running the built-in phases without the engine.

`LocalRun` / `LocalContext` implement the contract's Python-phase `ctx` with batch files in
a run folder laid out as the engine's: a batch commits when its loop body finishes,
committed batches are skipped on a second call (resume), and `stop_after` raises after that
many commits in this process to stand in for a kill between batches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from runner.console.view import ProgressBar, progress

__all__ = ["Interrupted", "LocalBatch", "LocalContext", "LocalRun"]


class Interrupted(BaseException):
    """Stands in for a kill between two batches."""


class LocalBatch:
    """One batch: `.index`, `.items`, `.seed`, `.write(records)`."""

    def __init__(self, index: int, items: list[Any], seed: int) -> None:
        self.index, self.items, self.seed = index, items, seed
        self.records: list[dict[str, Any]] = []

    def write(self, records: list[dict[str, Any]]) -> None:
        self.records.extend(records)


class LocalContext:
    """The `ctx` of one phase instance, backed by `run_dir/phases/<phase>.i<N>/`."""

    def __init__(self, run: LocalRun, phase: str, params: dict[str, Any], iteration: int,
                 stop_after: int | None = None) -> None:
        self.run, self.phase, self.params, self.iteration = run, phase, params, iteration
        self.seed = int(hashlib.sha256(f"{run.seed}:{phase}".encode()).hexdigest()[:12], 16)
        self.run_id, self.spec_sha256, self.git_commit = run.run_id, "0" * 64, None
        self.run_dir, self.cache_dir, self.spec_dir = run.root, run.root / "cache", run.spec_dir
        self.output_dir = run.root / "phases" / f"{phase}.i{iteration}"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.model_spec = run.model_spec
        self.input_names = [p for p in run.order if p != phase]
        self.log = structlog.get_logger("test").bind(phase=phase)
        self.stop_after, self.used_cuda, self._next_index = stop_after, False, 0
        self._open: list[int] = []
        self._commits = 0

    def input(self, name: str) -> list[dict[str, Any]]:
        return self.run.records(name, self.iteration)

    def input_dir(self, name: str) -> Path:
        """The folder of the latest instance of `name` up to this iteration."""
        for n in range(self.iteration, 0, -1):
            folder = self.run.root / "phases" / f"{name}.i{n}"
            if folder.is_dir():
                return folder
        raise KeyError(name)

    def records(self) -> list[dict[str, Any]]:
        """This instance's committed records so far (resumed batches included)."""
        files = sorted((self.output_dir / "batches").glob("*.jsonl"))
        return [json.loads(line) for f in files for line in f.read_text().splitlines() if line]

    def batches(self, items: list[Any], size: int) -> Iterator[LocalBatch]:
        for batch in self._split(items, size):
            yield batch
            self._commit(batch)

    def open_batches(self, items: list[Any], size: int) -> Iterator[LocalBatch]:
        """As `batches`, committed by `commit` in the order handed out."""
        for batch in self._split(items, size):
            self._open.append(batch.index)
            yield batch

    def commit(self, batch: LocalBatch) -> None:
        if not self._open or self._open[0] != batch.index:
            raise ValueError(f"batch {batch.index} committed out of order or twice")
        self._open.pop(0)
        self._commit(batch)

    def _split(self, items: list[Any], size: int) -> Iterator[LocalBatch]:
        items = list(items)
        for start in range(0, len(items), size):
            index = self._next_index
            self._next_index += 1
            path = self.output_dir / "batches" / f"{index:06d}.jsonl"
            if path.exists():
                continue
            digest = hashlib.sha256(f"{self.run.seed}:{self.phase}:{index}".encode())
            yield LocalBatch(index, items[start : start + size], int(digest.hexdigest()[:15], 16))

    def _commit(self, batch: LocalBatch) -> None:
        path = self.output_dir / "batches" / f"{batch.index:06d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in batch.records))
        self._commits += 1
        if self.stop_after is not None and self._commits >= self.stop_after:
            raise Interrupted(f"stopped after {self._commits} batches")

    def mark_cuda(self) -> None:
        self.used_cuda = True

    def progress(self, total: int, desc: str, done: int = 0) -> ProgressBar:
        return progress(total, desc, done)


class LocalRun:
    """A run folder holding phase instances in order, as the engine lays them out."""

    def __init__(self, root: Path, model_spec: dict[str, Any] | None, spec_dir: Path | None = None,
                 seed: int = 1234, run_id: str = "test-run") -> None:
        self.root, self.model_spec, self.spec_dir = root, model_spec, spec_dir
        self.seed, self.run_id = seed, run_id
        self.order: list[str] = []
        root.mkdir(parents=True, exist_ok=True)

    def context(self, phase: str, params: dict[str, Any], iteration: int = 1,
                stop_after: int | None = None) -> LocalContext:
        return LocalContext(self, phase, params, iteration, stop_after)

    def run(self, phase: str, fn: Any, params: dict[str, Any], iteration: int = 1,
            stop_after: int | None = None) -> dict[str, float]:
        ctx = self.context(phase, params, iteration, stop_after)
        metrics = fn(ctx)
        (ctx.output_dir / "metrics.json").write_text(json.dumps(metrics))
        if phase not in self.order:
            self.order.append(phase)
        return metrics

    def add_records(self, phase: str, records: list[dict[str, Any]], iteration: int = 1) -> None:
        """Lay down a finished phase's records by hand (one batch), as if it had run."""
        folder = self.root / "phases" / f"{phase}.i{iteration}" / "batches"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "000000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        if phase not in self.order:
            self.order.append(phase)

    def records(self, phase: str, iteration: int) -> list[dict[str, Any]]:
        for n in range(iteration, 0, -1):
            folder = self.root / "phases" / f"{phase}.i{n}" / "batches"
            if folder.is_dir():
                return [json.loads(line) for f in sorted(folder.glob("*.jsonl"))
                        for line in f.read_text().splitlines() if line]
        raise KeyError(phase)
