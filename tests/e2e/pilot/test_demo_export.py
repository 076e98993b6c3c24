"""After PROCEED the demo exports a dataset that Hugging Face `datasets` reads as it is."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pilotlib import EXIT_OK, instance, ok, runner, status

pytestmark = pytest.mark.slow


@dataclass
class Exported:
    state_dir: Path
    status: dict[str, Any]
    dataset: Path


@pytest.fixture(scope="module")
def exported(small_run, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A copy of the small demo at its gate, PROCEEDed and resumed to its end."""
    state = small_run.copy_to(tmp_path_factory.mktemp("export") / "state")
    ok(runner(state, "decide", small_run.run_id, "--gate", "pilot_qc", "--decision", "proceed",
              "--reviewer", "test", "--reason", "export test", "--override-checks"))
    ok(runner(state, "resume", small_run.run_id), EXIT_OK)
    st = status(state, small_run.run_id)
    return Exported(state, st, state / small_run.run_id / "phases" / "export.i1" / "dataset")


def test_demo_completes_with_the_export(exported):
    """The run completes and the export phase succeeded with a positive `rows` metric."""
    export = instance(exported.status, "export", 1)
    assert (exported.status["status"], export["status"]) == ("completed", "succeeded")
    assert export["metrics"]["rows"] > 0


def test_datasets_reads_jsonl_and_parquet_with_rows_rows(exported, tmp_path, monkeypatch):
    """load_dataset("json") and load_dataset("parquet") each read `rows` rows of user/assistant turns."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    rows = instance(exported.status, "export", 1)["metrics"]["rows"]
    cache = str(tmp_path / "hf")
    as_json = load_dataset("json", data_files=str(exported.dataset / "train.jsonl"), split="train", cache_dir=cache)
    as_parquet = load_dataset("parquet", data_files=str(exported.dataset / "train.parquet"), split="train",
                              cache_dir=cache)
    assert len(as_json) == len(as_parquet) == rows
    assert [m["role"] for m in as_parquet[0]["messages"]] == ["user", "assistant"]
    assert as_json[0]["prompt"] == as_json[0]["messages"][0]["content"]


def test_rows_are_the_accepted_pairs(exported):
    """The exported ids are exactly the pair critic's accepted records, in order."""
    critic = exported.state_dir / "pilot" / "phases" / "critic_pairs.i1" / "records.jsonl"
    accepted = [r["id"] for r in map(json.loads, critic.read_text().splitlines()) if r["keep"]]
    exported_ids = [json.loads(line)["id"] for line in (exported.dataset / "train.jsonl").read_text().splitlines()]
    assert exported_ids == accepted


def test_card_names_the_run_and_its_seed(exported):
    """The card carries the run id, the seed 1234 and the QC table of the qc phase."""
    card = (exported.dataset / "README.md").read_text()
    assert "| run id | pilot |" in card and "| seed of the run | 1234 |" in card and "### qc" in card


def test_gate_page_is_self_contained(exported):
    """The gate's packet.html embeds its plots as data: URIs and has no script."""
    page = (exported.state_dir / "pilot" / "gates" / "pilot_qc.i1" / "packet.html").read_text()
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in page.lower()
