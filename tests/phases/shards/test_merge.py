"""The merge phase over sharded Stage-1 phases on the tiny model (slow tier)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, cli, status

pytestmark = pytest.mark.slow

FIX = ROOT / "fixtures"
SHARDS = "{count: 3, executor: local, workers: 1}"
SPEC = f"""version: 1
name: merge-test
seed: 21
model: {{path: {FIX / 'tiny-base'}}}
params: {{threshold: 0.5}}
phases:
  - name: gen_i
    uses: generate_instructions
    with: {{count: 12, oversample: 1.5, batch_size: 3, max_new_tokens: 24, fewshot: {FIX / 'fewshot' / 'instructions.jsonl'}}}
    shards: {SHARDS}
  - name: crit_i
    uses: critic_filter
    with: {{source: gen_i, kind: instruction, batch_size: 4, confidence_threshold: "${{params.threshold}}"}}
    shards: {SHARDS}
  - name: gen_r
    uses: generate_responses
    with: {{source: crit_i, batch_size: 3, max_new_tokens: 32, fewshot: {FIX / 'fewshot' / 'pairs.jsonl'}}}
    shards: {SHARDS}
  - name: crit_p
    uses: critic_filter
    with: {{source: gen_r, kind: pair, batch_size: 4, confidence_threshold: "${{params.threshold}}"}}
    shards: {SHARDS}
  - name: merge
    uses: merge
    with:
      phases: {{instructions: gen_i, instruction_critic: crit_i, responses: gen_r, pair_critic: crit_p}}
"""


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed run of the sharded pipeline with its merge (the state dir)."""
    tmp = tmp_path_factory.mktemp("merge")
    (tmp / "spec.yaml").write_text(SPEC)
    out = cli(tmp / "state", "run", str(tmp / "spec.yaml"), "--run-id", "m")
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / "state"


def _shard_sum(state: Path, phase: str, metric: str) -> float:
    dones = (state / "m" / "phases" / f"{phase}.i1" / "shards").glob("*/done.json")
    return sum(json.loads(p.read_text())["metrics"].get(metric, 0) for p in dones)


def test_merge_additive_metrics_equal_the_shard_aggregates(merged: Path) -> None:
    """Every additive count merge recomputed on the joined records equals the shards' sum."""
    metrics = next(p for p in status(merged, "m")["phases"] if p["name"] == "merge")["metrics"]
    checked = {k: v for k, v in metrics.items() if k.startswith("additive_")}
    roles = {"instructions": "gen_i", "instruction_critic": "crit_i", "responses": "gen_r", "pair_critic": "crit_p"}
    assert {"additive_instructions_generated", "additive_pair_critic_scored"} <= set(checked)
    for key, value in checked.items():
        role, metric = next((r, key[len(f"additive_{r}_"):]) for r in roles if key.startswith(f"additive_{r}_"))
        assert value == _shard_sum(merged, roles[role], metric), key
    assert metrics["shards_checked"] == 12


def test_merge_keeps_each_instruction_once(merged: Path) -> None:
    """Merged pairs are accepted pairs with no instruction twice (normalised)."""
    rows = [json.loads(line) for line in (merged / "m" / "phases" / "merge.i1" / "records.jsonl").read_text().splitlines()]
    keys = [" ".join(r["instruction"].lower().split()) for r in rows]
    assert rows and len(keys) == len(set(keys)) and all(r["keep"] for r in rows)


def test_merge_refuses_records_that_differ_from_their_shards(merged: Path, tmp_path: Path) -> None:
    """A joined records file that lost a line no longer matches its shards: the check fails."""
    import shutil

    from runner.errors import PhaseError
    from runner.llm.stage1.merge import _check_shards

    folder = tmp_path / "gen_r.i1"
    shutil.copytree(merged / "m" / "phases" / "gen_r.i1", folder)
    joined = folder / "records.jsonl"
    joined.write_text("".join(joined.read_text().splitlines(keepends=True)[1:]))
    records = [json.loads(line) for line in joined.read_text().splitlines()]
    with pytest.raises(PhaseError, match="differs from its shards"):
        _check_shards("merge", folder, joined, records, "responses", {})
