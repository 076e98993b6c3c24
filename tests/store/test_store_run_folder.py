"""Tests of `runner.store.run_folder`: layout, run ids, snapshot, decision files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runner.errors import Refused, UsageError
from runner.store.run_folder import RunFolder, list_runs, new_run_id


def _folder(tmp_path: Path, run_id: str = "pilot-1") -> RunFolder:
    folder = RunFolder(tmp_path / "state", run_id)
    folder.create()
    return folder


def _decision(gate: str, iteration: int, at: str) -> dict[str, object]:
    return {"gate": gate, "iteration": iteration, "decision": "proceed", "at": at}


def test_create_makes_the_design_layout(tmp_path: Path) -> None:
    """create() makes the run folder with decisions/, gates/, phases/ and cache/."""
    folder = _folder(tmp_path)
    assert folder.exists() and folder.root == tmp_path / "state" / "pilot-1"
    names = sorted(p.name for p in folder.root.iterdir())
    assert names == ["cache", "decisions", "gates", "phases"]
    assert folder.events.name == "events.jsonl" and folder.snapshot.name == "state.json"
    assert folder.phase_dir("train", 2) == folder.root / "phases" / "train.i2"
    assert folder.gate_dir("qc", 1) == folder.root / "gates" / "qc.i1"


def test_create_refuses_an_existing_run_id(tmp_path: Path) -> None:
    """A second create() of the same run id raises Refused."""
    _folder(tmp_path)
    with pytest.raises(Refused, match="already exists"):
        _folder(tmp_path)


def test_invalid_run_id_is_a_usage_error(tmp_path: Path) -> None:
    """A run id with a slash (or starting with a dot) is refused with a clear message."""
    with pytest.raises(UsageError, match="invalid run id"):
        RunFolder(tmp_path, "../escape")


def test_path_traversal_in_a_phase_name_is_a_usage_error(tmp_path: Path) -> None:
    """phase_dir refuses a name that would leave the phases folder."""
    with pytest.raises(UsageError, match="invalid phase name"):
        RunFolder(tmp_path, "r").phase_dir("../x", 1)


def test_new_run_id_has_name_utc_stamp_and_random_hex() -> None:
    """new_run_id is <name>-<yyyymmdd-HHMMSS>-<4 hex> and a valid run id."""
    run_id = new_run_id("stage1-pilot")
    assert re.fullmatch(r"stage1-pilot-\d{8}-\d{6}-[0-9a-f]{4}", run_id)
    RunFolder("/nonexistent", run_id)


def test_list_runs_lists_run_folders_only(tmp_path: Path) -> None:
    """list_runs returns the sorted run folders, skipping files and hidden entries."""
    _folder(tmp_path, "b-run")
    _folder(tmp_path, "a-run")
    (tmp_path / "state" / "README.md").write_text("x")
    (tmp_path / "state" / ".hidden").mkdir()
    assert list_runs(tmp_path / "state") == ["a-run", "b-run"]
    assert list_runs(tmp_path / "missing") == []


def test_snapshot_round_trips_and_is_none_when_missing(tmp_path: Path) -> None:
    """read_snapshot is None before a write and equals the dict written after it."""
    folder = _folder(tmp_path)
    assert folder.read_snapshot() is None
    state = {"status": "running", "phases": [{"name": "a", "metrics": {"x": 1.5}}]}
    folder.write_snapshot(state)
    assert folder.read_snapshot() == state


def test_record_decision_is_exclusive(tmp_path: Path) -> None:
    """The first decision on a gate iteration is stored; a second returns False."""
    folder = _folder(tmp_path)
    assert folder.record_decision("qc", 1, _decision("qc", 1, "2025-01-01T00:00:00Z"))
    assert not folder.record_decision("qc", 1, {"decision": "abort"})
    assert folder.decision_for("qc", 1) == _decision("qc", 1, "2025-01-01T00:00:00Z")
    assert (folder.decisions_dir / "qc.i0001.json").is_file()


def test_decision_for_a_gate_without_one_is_none(tmp_path: Path) -> None:
    """decision_for returns None when no decision file exists."""
    assert _folder(tmp_path).decision_for("qc", 3) is None


def test_read_decisions_are_in_recording_order(tmp_path: Path) -> None:
    """Decisions come by iteration (10 after 2), then by their `at`, not by gate name."""
    folder = _folder(tmp_path)
    folder.record_decision("zeta", 2, _decision("zeta", 2, "2025-01-02T00:00:00Z"))
    folder.record_decision("alpha", 2, _decision("alpha", 2, "2025-01-02T00:00:01Z"))
    folder.record_decision("alpha", 10, {"decision": "abort"})
    folder.record_decision("alpha", 1, _decision("alpha", 1, "2025-01-01T00:00:00Z"))
    order = [(d["gate"], d["iteration"]) for d in folder.read_decisions()]
    assert order == [("alpha", 1), ("zeta", 2), ("alpha", 2), ("alpha", 10)]


def test_record_decision_refuses_a_mismatched_gate(tmp_path: Path) -> None:
    """A decision dict naming another gate than the file it goes to is a ValueError."""
    with pytest.raises(ValueError):
        _folder(tmp_path).record_decision("qc", 1, {"gate": "other"})


def test_non_durable_snapshot_round_trips(tmp_path: Path) -> None:
    """write_snapshot(durable=False) (no fsyncs, for a cache) still reads back whole."""
    folder = _folder(tmp_path)
    folder.write_snapshot({"seq": 7}, durable=False)
    assert folder.read_snapshot() == {"seq": 7}
