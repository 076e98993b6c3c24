"""Stateful property test: journal appends, batch commits, torn tails and reopens in any order."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from runner.store.batches import BatchStore
from runner.store.journal import GENESIS_HASH, Journal, record_hash

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
)
events = st.dictionaries(st.text(max_size=6), json_scalars, max_size=3)
records = st.lists(st.dictionaries(st.sampled_from("abc"), json_scalars, max_size=2), max_size=3)


class StoreMachine(RuleBasedStateMachine):
    """Model: the events fully written (a torn one is not) and the committed batches."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="store-stateful-"))
        self.path = self.dir / "events.jsonl"
        self.journal = Journal(self.path)
        self.store = BatchStore(self.dir / "phase.i1")
        self.model: list[dict[str, Any]] = []
        self.batches: dict[int, list[dict[str, Any]]] = {}
        self.torn = False

    @precondition(lambda self: not self.torn)
    @rule(event=events)
    def append(self, event: dict[str, Any]) -> None:
        """Append an event; it is fully written once append returns."""
        self.journal.append(event)
        self.model.append(event)

    @precondition(lambda self: bool(self.model) and not self.torn)
    @rule(data=st.data())
    def tear_tail(self, data: st.DataObject) -> None:
        """Truncate the file at a random byte inside its last line, as a crash mid-write would."""
        raw = self.path.read_bytes()
        start = raw.rfind(b"\n", 0, len(raw) - 1) + 1
        cut = data.draw(st.integers(start + 1, len(raw) - 1), label="cut")
        os.truncate(self.path, cut)
        self.model.pop()
        self.torn = True

    @precondition(lambda self: bool(self.model) and not self.torn)
    @rule()
    def garble_last_line(self) -> None:
        """Overwrite the last line's hash with another, keeping its newline (bad hash)."""
        lines = self.path.read_bytes().splitlines(keepends=True)
        rec = json.loads(lines[-1])
        rec["hash"] = "f" * 64 if rec["hash"] != "f" * 64 else "e" * 64
        lines[-1] = (json.dumps(rec) + "\n").encode()
        self.path.write_bytes(b"".join(lines))
        self.model.pop()
        self.torn = True

    @rule()
    def reopen(self) -> None:
        """A new Journal object on the same file reads with repair, as a resume does."""
        self.journal.close()
        self.journal = Journal(self.path)
        result = self.journal.read(repair=True)
        assert (result.repaired_tail is not None) == self.torn
        self.torn = False
        self.store.discard_uncommitted()

    @rule(index=st.integers(0, 12), recs=records)
    def commit_batch(self, index: int, recs: list[dict[str, Any]]) -> None:
        """Commit a batch; an index already committed keeps its first records."""
        assert self.store.commit(index, recs) is (index not in self.batches)
        self.batches.setdefault(index, recs)

    @rule(index=st.integers(0, 12))
    def leave_crashed_temp(self, index: int) -> None:
        """Leave a half-written temp file, as a crash during a commit would."""
        self.store.batches_dir.mkdir(parents=True, exist_ok=True)
        (self.store.batches_dir / f".{index:06d}.jsonl.0123456789ab.tmp").write_bytes(b'{"a":')

    @invariant()
    def journal_equals_model(self) -> None:
        """Read back (without repair), the journal holds exactly the fully written events."""
        result = Journal(self.path).read(repair=False)
        assert result.events == self.model
        assert (result.repaired_tail is not None) == self.torn
        prev = GENESIS_HASH
        for seq, rec in enumerate(result.records, start=1):
            assert rec["seq"] == seq and rec["prev"] == prev
            assert rec["hash"] == record_hash(rec["seq"], rec["at"], rec["event"], rec["prev"])
            prev = rec["hash"]

    @invariant()
    def batches_equal_model(self) -> None:
        """Committed batches are exactly the model's, read back in index order."""
        assert self.store.committed() == set(self.batches)
        expected = [r for i in sorted(self.batches) for r in self.batches[i]]
        assert self.store.read_records() == expected

    def teardown(self) -> None:
        self.journal.close()
        shutil.rmtree(self.dir, ignore_errors=True)


StoreMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_store_stateful = StoreMachine.TestCase
