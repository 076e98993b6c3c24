"""The Ray shard executor, on a local Ray on CPU (slow tier: starting Ray takes seconds)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, cli, records, spec_variant, status

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

RAY = "{count: 3, executor: ray, resources: {num_cpus: 1}}"


def test_ray_shards_give_the_in_process_records(reference: Path, tmp_path: Path) -> None:
    """Three shards as Ray tasks write the records in-process shards write, byte for byte."""
    out = cli(tmp_path / "state", "run", str(spec_variant(tmp_path, RAY)), "--run-id", "ref")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "shards_submitted" in (tmp_path / "state" / "ref" / "log.jsonl").read_text()
    assert sorted(re.findall(r" draw shard (\d) of 3 done", out.stderr)) == ["0", "1", "2"]  # a line per shard
    assert records(tmp_path / "state", "ref", "draw") == records(reference, "ref", "draw")


def test_ray_retries_a_killed_worker_with_no_record_lost_or_repeated(reference: Path, tmp_path: Path) -> None:
    """A Ray worker SIGKILLed mid-shard is retried by Ray; the shard resumes from its commits."""
    marker = tmp_path / "killed-once"
    spec = spec_variant(tmp_path, RAY)
    spec.write_text(spec.read_text().replace('kill_marker: ""', f"kill_marker: '{marker}'"))
    out = cli(tmp_path / "state", "run", str(spec), "--run-id", "ref")
    assert out.returncode == 0 and marker.exists(), out.stderr[-2000:]
    draw = next(p for p in status(tmp_path / "state", "ref")["phases"] if p["name"] == "draw")
    assert draw["metrics"]["drawn_now"] < 60  # the two batches committed before the kill were kept
    assert records(tmp_path / "state", "ref", "draw") == records(reference, "ref", "draw")


def test_ray_shards_generate_with_the_tiny_model(tmp_path: Path) -> None:
    """A 3-shard instruction generation on the tiny model completes on Ray, ids unique."""
    spec = tmp_path / "gen.yaml"
    spec.write_text(f"""version: 1
name: ray-gen
seed: 5
model: {{path: {ROOT / 'fixtures' / 'tiny-base'}}}
phases:
  - name: generate_instructions
    uses: generate_instructions
    with: {{count: 9, oversample: 1.0, batch_size: 3, max_new_tokens: 24,
           fewshot: {ROOT / 'fixtures' / 'fewshot' / 'instructions.jsonl'}}}
    shards: {RAY}
""")
    out = cli(tmp_path / "state", "run", str(spec), "--run-id", "g")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in records(tmp_path / "state", "g", "generate_instructions").decode().splitlines()]
    assert len(rows) == 9 and len({r["id"] for r in rows}) == 9
