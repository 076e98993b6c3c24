"""The `export` phase on hand-made records through a real PhaseContext: rows, files, the card,
refusals and the atomic replace."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from runner.errors import PhaseError
from runner.llm.stage1 import export as export_mod
from runner.llm.stage1.export import MARKER, export
from runner.phases.context import PhaseContext

ODD = '<script>alert(1)</script> "onerror=x | `tick` [link](javascript:alert(2))\n---\nfoo: bar'


def _pair(n: int, **over: Any) -> dict[str, Any]:
    record = {"id": f"i{n:06d}", "stage": "pair_critic", "instruction": f"Task {n}?",
              "response": f"Answer {n}.", "p_a": 0.9, "verdict": "accept", "keep": True,
              "provenance": {"run_id": "r1", "iteration": 1, "phase": "critic_pairs",
                             "spec_sha256": "s" * 64, "git_commit": None, "model_hash": "m" * 64,
                             "batch_seed": 2**62 + n, "params": {"confidence_threshold": 0.5}}}
    record.update(over)
    return record


RECORDS = [_pair(1), _pair(2), _pair(3, keep=False, verdict="reject"), _pair(4, response=None)]


class Run:
    """A run folder with finished input phases laid out as the engine lays them out."""

    def __init__(self, root: Path, run_id: str = "r1") -> None:
        self.root, self.run_id = root / run_id, run_id
        self.inputs: dict[str, Path] = {}

    def add(self, name: str, records: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
        folder = self.root / "phases" / f"{name}.i1"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (folder / "metrics.json").write_text(json.dumps(metrics))
        self.inputs[name] = folder

    def read(self, name: str) -> list[dict[str, Any]]:
        text = (self.inputs[name] / "records.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines() if line]

    def ctx(self, params: dict[str, Any], phase: str = "export", spec_dir: Path | None = None) -> PhaseContext:
        return PhaseContext(
            run_id=self.run_id, phase=phase, iteration=1, run_seed=1234, params=params,
            output_dir=self.root / "phases" / f"{phase}.i1", run_dir=self.root,
            cache_dir=self.root / "cache", spec_dir=spec_dir or self.root.parent,
            spec_sha256="s" * 64, git_commit="c" * 40, model_spec=None,
            log=structlog.get_logger("test"), read_input=self.read,
            input_names=list(self.inputs), input_dirs=dict(self.inputs),
        )


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """A run whose critic_pairs holds RECORDS and whose qc reports two metrics."""
    r = Run(tmp_path)
    r.add("critic_pairs", RECORDS, {"scored": 4, "accepted": 3, "acceptance": 0.75, "probe_auc": 0.81})
    r.add("qc", [], {"runaway_rate": 0.0, "median_response_tokens": 14.0})
    return r


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    return yaml.safe_load(card[4:card.index("\n---\n", 4)])


def _outside_fences(card: str) -> str:
    return re.sub(r"^(`{3,})[^\n]*\n.*?^\1$", "", card, flags=re.S | re.M)


def test_metrics_count_kept_pairs(run):
    """rows = kept records with both texts; the others are counted by reason."""
    metrics = export(run.ctx({"source": "critic_pairs"}))
    assert metrics == {"rows": 2, "source_records": 4, "not_kept": 1, "incomplete": 1}


def test_row_holds_messages_prompt_completion(run):
    """A row: id, messages (user then assistant), prompt, completion, provenance."""
    ctx = run.ctx({"source": "critic_pairs"})
    export(ctx)
    row = _rows(ctx.output_dir / "dataset" / "train.jsonl")[0]
    assert row["messages"] == [{"role": "user", "content": "Task 1?"},
                               {"role": "assistant", "content": "Answer 1."}]
    assert (row["id"], row["prompt"], row["completion"]) == ("i000001", "Task 1?", "Answer 1.")
    assert row["provenance"]["model_hash"] == "m" * 64
    assert json.loads(row["provenance"]["settings"]) == {"confidence_threshold": 0.5}


def test_rows_are_the_phases_records(run):
    """The phase's committed records are the rows of train.jsonl (what `sft` reads)."""
    ctx = run.ctx({"source": "critic_pairs"})
    export(ctx)
    assert ctx.records() == _rows(ctx.output_dir / "dataset" / "train.jsonl")


def test_datasets_reads_jsonl_parquet_and_folder(run, tmp_path, monkeypatch):
    """HF datasets loads train.jsonl, train.parquet and the folder (by the card) alike."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    ctx = run.ctx({"source": "critic_pairs"})
    export(ctx)
    folder, cache = ctx.output_dir / "dataset", str(tmp_path / "hf")
    as_json = load_dataset("json", data_files=str(folder / "train.jsonl"), split="train", cache_dir=cache)
    as_parquet = load_dataset("parquet", data_files=str(folder / "train.parquet"), split="train", cache_dir=cache)
    by_card = load_dataset(str(folder), split="train", cache_dir=cache)
    assert [len(as_json), len(as_parquet), len(by_card)] == [2, 2, 2]
    assert as_parquet[0]["messages"] == as_json[0]["messages"] and by_card[1]["completion"] == "Answer 2."


def test_card_has_counts_qc_critics_and_provenance(run, tmp_path):
    """The card shows counts, the QC table, critic figures, params, model hash, commit, seed."""
    (run.root / "state.json").write_text(json.dumps({"name": "demo", "params": {"response": {"t": 0.7}}}))
    ctx = run.ctx({"source": "critic_pairs"})
    export(ctx)
    card = (ctx.output_dir / "dataset" / "README.md").read_text()
    expected = ("| exported pairs (rows) | 2 |", "| runaway_rate | 0 |", "| probe_auc |",
                "| critic_pairs | 4 | 3 | 0.75 | 0.81 |", "m" * 64, "c" * 40,
                "| seed of the run | 1234 |", "response:\n  t: 0.7", "# demo SFT pairs")
    assert [s for s in expected if s not in card] == []


def test_card_front_matter_names_the_train_split(run):
    """The front matter's config maps the train split to train.parquet; license unknown."""
    ctx = run.ctx({"source": "critic_pairs"})
    export(ctx)
    meta = _front_matter((ctx.output_dir / "dataset" / "README.md").read_text())
    assert meta["configs"] == [{"config_name": "default",
                                "data_files": [{"split": "train", "path": "train.parquet"}]}]
    assert meta["license"] == "unknown"


def test_card_escapes_odd_text(run):
    """Odd text in a license, a metric name and a parameter neither breaks nor injects."""
    (run.root / "state.json").write_text(json.dumps({"name": "demo", "params": {"style": ODD}}))
    run.add("qc", [], {ODD: 1.0, "runaway_rate": 0.0, "median_response_tokens": 14.0})
    ctx = run.ctx({"source": "critic_pairs", "license": ODD})
    export(ctx)
    card = (ctx.output_dir / "dataset" / "README.md").read_text()
    assert _front_matter(card)["license"] == ODD
    body = _outside_fences(card[card.index("\n---\n", 4) + 5:])
    assert "<script" not in body and '"onerror' not in body and "](javascript" not in body
    [odd_row] = [line for line in body.splitlines() if "&lt;script&gt;alert(1)" in line]
    assert len(re.findall(r"(?<!\\)\|", odd_row)) == 3  # still one row of two cells


def test_dir_publishes_the_same_files(run, tmp_path):
    """with.dir (relative to the spec's folder) receives the same three files and the marker."""
    ctx = run.ctx({"source": "critic_pairs", "dir": "out/data"}, spec_dir=tmp_path)
    export(ctx)
    published, own = tmp_path / "out" / "data", ctx.output_dir / "dataset"
    assert _digest(published) == _digest(own)
    assert {"train.jsonl", "train.parquet", "README.md", MARKER} == {p.name for p in published.iterdir()}


def test_foreign_dataset_is_refused_before_writing(run, tmp_path):
    """A folder holding another run's export is refused; nothing is written anywhere."""
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / MARKER).write_text(json.dumps({"run_id": "other", "phase": "export"}))
    (foreign / "train.jsonl").write_text("{}\n")
    before = _digest(foreign)
    ctx = run.ctx({"source": "critic_pairs", "dir": str(foreign)})
    with pytest.raises(PhaseError, match="dataset of run 'other' phase 'export'"):
        export(ctx)
    assert _digest(foreign) == before and not (ctx.output_dir / "dataset").exists()


def test_other_phase_of_same_run_is_refused(run, tmp_path):
    """The same run's export from another phase is foreign too."""
    export(run.ctx({"source": "critic_pairs", "dir": str(tmp_path / "d")}, phase="export_a"))
    with pytest.raises(PhaseError, match="phase 'export_a'"):
        export(run.ctx({"source": "critic_pairs", "dir": str(tmp_path / "d")}, phase="export_b"))


def test_folder_of_unrelated_files_is_refused(run, tmp_path):
    """A non-empty folder without an export marker is never replaced."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(PhaseError, match="no export wrote"):
        export(run.ctx({"source": "critic_pairs", "dir": str(tmp_path / "d")}))


def test_rerun_replaces_the_dataset_as_a_whole(run, tmp_path):
    """A re-run of the same run and phase swaps in a new folder and leaves no temporary one."""
    target = tmp_path / "d"
    export(run.ctx({"source": "critic_pairs", "dir": str(target)}))
    first = target.stat().st_ino
    run.add("critic_pairs", [_pair(n) for n in range(1, 6)], {})
    ctx = run.ctx({"source": "critic_pairs", "dir": str(target)}, phase="export")
    for f in (ctx.output_dir / "batches").glob("*"):  # a new attempt: the phase re-runs whole
        f.unlink()
    export(run.ctx({"source": "critic_pairs", "dir": str(target)}))
    assert len(_rows(target / "train.jsonl")) == 5 and target.stat().st_ino != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "r1"]


def test_rerun_without_atomic_exchange_replaces_too(run, tmp_path, monkeypatch):
    """Where renameat2 is missing the two-rename fallback gives the same result."""
    monkeypatch.setattr(export_mod, "_exchange", lambda a, b: False)
    target = tmp_path / "d"
    export(run.ctx({"source": "critic_pairs", "dir": str(target)}))
    export(run.ctx({"source": "critic_pairs", "dir": str(target)}))
    assert len(_rows(target / "train.jsonl")) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["d", "r1"]


def test_failed_rewrite_keeps_the_old_dataset(run, tmp_path, monkeypatch):
    """A re-run that fails while writing leaves the previous dataset whole, and no temp folder."""
    target = tmp_path / "d"
    export(run.ctx({"source": "critic_pairs", "dir": str(target)}))
    before = _digest(target)

    def broken(path: Path, rows: list[dict[str, Any]]) -> None:
        path.write_bytes(b"half a parquet file")
        raise OSError("disk full")

    monkeypatch.setattr(export_mod, "_write_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        export(run.ctx({"source": "critic_pairs", "dir": str(target)}))
    assert _digest(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["d", "r1"]


def test_no_kept_pair_is_an_error(tmp_path):
    """A source without one kept pair fails the phase, saying how many records it had."""
    r = Run(tmp_path)
    r.add("critic_pairs", [_pair(1, keep=False)], {})
    with pytest.raises(PhaseError, match=r"no kept record .* \(1 records, 1 not kept\)"):
        export(r.ctx({"source": "critic_pairs"}))


def test_unknown_with_key_is_an_error(run):
    """A misspelt with: key fails with a did-you-mean hint."""
    with pytest.raises(PhaseError, match="did you mean 'source'"):
        export(run.ctx({"sourse": "critic_pairs"}))
