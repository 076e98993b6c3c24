"""The local shard executor: in-process shards, worker processes, a worker killed mid-shard."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import cli, records, spec_variant, status


def test_three_shards_in_process_join_every_item_once(reference: Path) -> None:
    """A 3-shard phase's records hold each item exactly once, shard 0 first."""
    rows = [json.loads(line) for line in records(reference, "ref", "draw").decode().splitlines()]
    assert sorted(r["id"] for r in rows) == list(range(60))
    assert [r["shard"] for r in rows] == sorted(r["shard"] for r in rows)


def test_sharded_phase_metrics_sum_the_shards(reference: Path) -> None:
    """The phase's additive metrics are the sums of its shards' metrics."""
    shard_dirs = sorted((reference / "ref" / "phases" / "draw.i1" / "shards").glob("*/done.json"))
    dones = [json.loads(p.read_text()) for p in shard_dirs]
    draw = next(p for p in status(reference, "ref")["phases"] if p["name"] == "draw")
    assert draw["metrics"]["generated"] == sum(d["metrics"]["generated"] for d in dones) == 60
    assert draw["metrics"]["shards"] == 3


def test_shards_draw_distinct_numbers(reference: Path) -> None:
    """Each shard has its own seeds: no two shards draw the same sequence."""
    rows = [json.loads(line) for line in records(reference, "ref", "draw").decode().splitlines()]
    firsts = {r["shard"]: r["x"] for r in rows if r["id"] < 3}
    assert len(set(firsts.values())) == 3


def test_worker_processes_give_the_in_process_records(reference: Path, tmp_path: Path) -> None:
    """Two CPU worker processes produce the same records, byte for byte, as in-process shards."""
    out = cli(tmp_path / "state", "run", str(spec_variant(tmp_path, "{count: 3, executor: local, workers: 2}")),
              "--run-id", "ref")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "shard_worker_started" in (tmp_path / "state" / "ref" / "log.jsonl").read_text()
    assert records(tmp_path / "state", "ref", "draw") == records(reference, "ref", "draw")


def test_killed_worker_fails_the_phase_and_resume_completes_it(reference: Path, tmp_path: Path) -> None:
    """A worker SIGKILLed mid-shard fails the phase; resume redoes only what was not committed."""
    marker = tmp_path / "killed-once"
    spec = spec_variant(tmp_path, "{count: 3, executor: local, workers: 2}",
                        extra_params=f"  kill_marker_path: '{marker}'\n")
    spec.write_text(spec.read_text().replace('kill_marker: ""', f"kill_marker: '{marker}'"))
    state = tmp_path / "state"
    first = cli(state, "run", str(spec), "--run-id", "ref")
    assert first.returncode == 1 and marker.exists(), first.stderr[-2000:]
    assert "exited -9" in status(state, "ref")["failure"]
    committed = sorted(p.name for p in (state / "ref" / "phases" / "draw.i1" / "shards" / "0001" / "batches").iterdir())
    assert committed == ["000000.jsonl", "000001.jsonl"]
    again = cli(state, "resume", "ref")
    assert again.returncode == 0, again.stderr[-2000:]
    assert records(state, "ref", "draw") == records(reference, "ref", "draw")


def test_probe_figures_of_one_shard_are_kept():
    """A critic's probe figures, computed by shard 0 only, survive aggregation; rates do not."""
    from runner.phases.shards import aggregate_metrics

    dones = [{"records": 2, "metrics": {"scored": 2, "acceptance": 0.5, "probe_auc": 0.9}},
             {"records": 3, "metrics": {"scored": 3, "acceptance": 1.0}}]
    assert aggregate_metrics(dones) == {"shards": 2, "records": 5, "scored": 5, "probe_auc": 0.9}
