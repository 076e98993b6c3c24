"""`ctx`: what a Python phase receives, and exactly-once batch commits.

A batch commits when the body of the `for batch in ctx.batches(...)` loop finishes: the
generator only writes the batch's records after control comes back to it. If the body raises,
the generator is closed at its `yield` and nothing is written, so the batch runs again on
resume. Batch indexes count from 0 across every `ctx.batches` call of one phase instance, and
a batch's seed depends only on (run seed, phase name, index), so a resumed phase draws the same
numbers as an uninterrupted one and its records come out byte-identical.

When work of several batches is in flight at once (continuous-refill generation lets rows of
many batches share the decoding slots), `open_batches` hands out the same batches without
committing them, and the phase commits each with `commit(batch)` when its last row has
finished. Commits go in index order, so the committed batches of an interrupted phase are
always a prefix of those it opened, and a crash loses only the batches not yet committed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.console.view import ProgressBar
from runner.console.view import progress as console_progress
from runner.store.batches import BatchStore, derive_seed

__all__ = ["Batch", "PhaseContext"]


@dataclass
class Batch:
    """One unit of exactly-once work: `items` in, records out through `write`."""

    index: int
    items: list[Any]
    seed: int
    records: list[dict[str, Any]] = field(default_factory=list)

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Add records to this batch; they become durable when the batch commits."""
        self.records.extend(records)


@dataclass
class PhaseContext:
    """The `ctx` of the contract, plus what built-in phases need (model spec, caches)."""

    run_id: str
    phase: str
    iteration: int
    run_seed: int
    params: dict[str, Any]
    output_dir: Path
    run_dir: Path
    cache_dir: Path
    spec_dir: Path
    spec_sha256: str
    git_commit: str | None
    model_spec: dict[str, Any] | None
    log: Any
    read_input: Callable[[str], list[dict[str, Any]]]
    input_names: list[str] = field(default_factory=list)  # what `input` accepts, in spec order
    input_dirs: dict[str, Path] = field(default_factory=dict)  # their instances' folders
    options: Any = None  # the `with:` validated by the phase's model (None: it declares none)
    shard: int | None = None  # this call's shard of a sharded phase, else None
    num_shards: int = 1
    used_cuda: bool = False
    _next_batch: int = 0
    _store: BatchStore = field(init=False)
    _committed: set[int] = field(init=False)
    _open: deque[int] = field(init=False, default_factory=deque)

    def __post_init__(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._store = BatchStore(self.output_dir)
        self._store.discard_uncommitted()
        self._committed = self._store.committed()

    def begin_attempt(self) -> None:
        """Start an attempt of the phase (a retry too): batch indexes count from 0 again,
        batches opened and not committed by an earlier attempt are dropped."""
        self._next_batch = 0
        self._open.clear()
        self._committed = self._store.committed()

    @property
    def _seed_key(self) -> str:
        # A shard draws its own numbers; an unsharded phase keeps the contract's key.
        return self.phase if self.shard is None else f"{self.phase}/shard{self.shard}"

    @property
    def seed(self) -> int:
        """Derived from the run seed and the phase name (and shard) only, not the iteration."""
        return derive_seed(self.run_seed, self._seed_key)

    def shard_items(self, items: Iterable[Any]) -> list[Any]:
        """This shard's share of `items` (every `num_shards`-th one); all of them unsharded."""
        pool = list(items)
        return pool if self.shard is None else pool[self.shard :: self.num_shards]

    def input(self, name: str) -> list[dict[str, Any]]:
        """The records an earlier phase wrote, in batch-index order."""
        return self.read_input(name)

    def input_dir(self, name: str) -> Path:
        """The folder of the instance whose records `input(name)` returns (shards, artefacts)."""
        if name not in self.input_dirs:
            raise KeyError(f"ctx.input_dir('{name}'): not an input of this phase with output yet")
        return self.input_dirs[name]

    def records(self) -> list[dict[str, Any]]:
        """This instance's committed records so far, those of earlier attempts included."""
        return self._store.read_records()

    def batches(self, items: Iterable[Any], size: int) -> Iterator[Batch]:
        """Split `items` into batches; skip those already committed; commit each on success."""
        for batch in self._split(items, size):
            yield batch
            # Reached only when the loop body finished without raising.
            self._commit(batch)

    def open_batches(self, items: Iterable[Any], size: int) -> Iterator[Batch]:
        """The batches `batches` would give (same indexes, seeds, skips), none committed:
        the caller commits each with `commit(batch)`, in the order they were handed out."""
        for batch in self._split(items, size):
            self._open.append(batch.index)
            yield batch

    def commit(self, batch: Batch) -> None:
        """Commit a batch from `open_batches`: its records become durable, exactly once."""
        if not self._open or self._open[0] != batch.index:
            raise ValueError(f"commit of batch {batch.index}: batches from open_batches "
                             f"commit once each, in order (next: {list(self._open)[:1]})")
        self._open.popleft()
        self._commit(batch)

    def _split(self, items: Iterable[Any], size: int) -> Iterator[Batch]:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"batch size must be a positive integer, got {size!r}")
        pool = list(items)
        for start in range(0, len(pool), size):
            index = self._next_batch
            self._next_batch += 1
            if index in self._committed:
                continue
            yield Batch(index, pool[start : start + size],
                        derive_seed(self.run_seed, self._seed_key, index))

    def _commit(self, batch: Batch) -> None:
        self._store.commit(batch.index, batch.records)
        self._committed.add(batch.index)
        self.log.debug("batch_committed", phase=self.phase, batch=batch.index,
                       records=len(batch.records))

    def mark_cuda(self) -> None:
        """Record that this phase instance used CUDA (for GPU-seconds and cost)."""
        self.used_cuda = True

    def progress(self, total: int, desc: str, done: int = 0) -> ProgressBar:
        """A bar in the console's live view (items/s, ETA; `done` items already done before this
        process, e.g. on resume). Draws nothing without a terminal; never in the JSON log."""
        return console_progress(total, desc, done)

    def finish_records(self) -> Path:
        """Join committed batches into `records.jsonl` (what `ctx.input` of later phases reads)."""
        target = self.output_dir / "records.jsonl"
        self._store.consolidate(target)
        return target
