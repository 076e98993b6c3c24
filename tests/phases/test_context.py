"""`ctx.open_batches` / `ctx.commit`: batches in flight together, committed once, in order."""

from pathlib import Path

import pytest
import structlog

from runner.phases.context import PhaseContext


def make_ctx(root: Path) -> PhaseContext:
    return PhaseContext(
        run_id="r", phase="gen", iteration=1, run_seed=7, params={}, output_dir=root / "out",
        run_dir=root, cache_dir=root / "cache", spec_dir=root, spec_sha256="0" * 64,
        git_commit=None, model_spec=None, log=structlog.get_logger("test"),
        read_input=lambda name: [])


def test_open_batches_match_batches(tmp_path):
    """Same indexes, items and seeds as `batches` gives."""
    a = [(b.index, b.items, b.seed) for b in make_ctx(tmp_path / "a").open_batches(range(7), 3)]
    b = [(b.index, b.items, b.seed) for b in make_ctx(tmp_path / "b").batches(range(7), 3)]
    assert a == b


def test_commit_in_order_writes_records(tmp_path):
    """Batches opened together and committed in order become the phase's records."""
    ctx = make_ctx(tmp_path)
    opened = list(ctx.open_batches(range(5), 2))
    for batch in opened:
        batch.write([{"x": i} for i in batch.items])
    for batch in opened:
        ctx.commit(batch)
    assert [r["x"] for r in ctx.records()] == [0, 1, 2, 3, 4]


def test_commit_out_of_order_refused(tmp_path):
    """Committing a later batch before an earlier one is refused, nothing written."""
    ctx = make_ctx(tmp_path)
    _, second = list(ctx.open_batches(range(4), 2))
    with pytest.raises(ValueError, match="in order"):
        ctx.commit(second)
    assert ctx.records() == []


def test_commit_twice_refused(tmp_path):
    """A batch commits exactly once."""
    ctx = make_ctx(tmp_path)
    (batch,) = list(ctx.open_batches(range(2), 2))
    ctx.commit(batch)
    with pytest.raises(ValueError, match="once"):
        ctx.commit(batch)


def test_resume_skips_committed_and_redoes_uncommitted(tmp_path):
    """A crash with batches open loses only the uncommitted ones; a new ctx redoes them."""
    ctx = make_ctx(tmp_path)
    opened = list(ctx.open_batches(range(6), 2))
    ctx.commit(opened[0])  # then a crash: batches 1 and 2 were in flight
    again = make_ctx(tmp_path)
    assert [b.index for b in again.open_batches(range(6), 2)] == [1, 2]


def test_begin_attempt_counts_from_zero(tmp_path):
    """A retried attempt sees the same indexes, skipping what the failed attempt committed."""
    ctx = make_ctx(tmp_path)
    opened = list(ctx.open_batches(range(6), 2))
    ctx.commit(opened[0])
    ctx.begin_attempt()
    assert [b.index for b in ctx.open_batches(range(6), 2)] == [1, 2]
