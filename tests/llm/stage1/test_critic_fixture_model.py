"""The instruments on the shipped tiny model (fixtures/tiny-base), which knows only yes = A.

It judges content well in the order it was trained on, and never reads which label the header
says means yes. So: without debiasing its probe set is well separated; with debiasing its two
orders cancel (the swapped order reads as the reverse verdict) and the probe figure falls to
chance or below: exactly what probe_auc is there to show.
"""

import json
from pathlib import Path

import pytest
from localctx import LocalRun

from runner.llm.stage1.phases import critic_filter

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def pairs_run(tmp_path: Path) -> LocalRun:
    """A run on fixtures/tiny-base whose source phase holds the shipped few-shot pairs."""
    run = LocalRun(tmp_path / "run", {"path": str(ROOT / "fixtures" / "tiny-base")},
                   spec_dir=ROOT / "specs")
    rows = [json.loads(x) for x in (ROOT / "fixtures/fewshot/pairs.jsonl").read_text().splitlines()]
    run.add_records("src", [{"id": f"p{n}", "stage": "responses", "keep": True, "class": "clean", **r}
                            for n, r in enumerate(rows)])
    return run


def _critic(run: LocalRun, debias: bool) -> dict[str, float]:
    return run.run("pc", critic_filter, {"source": "src", "kind": "pair", "debias": debias,
                                         "fewshot": "../fixtures/fewshot/pair_critic.jsonl"})


def test_raw_critic_separates_its_probe_set(pairs_run, fresh_loader):
    """debias: false (the order it was trained on): probe_auc >= 0.75."""
    assert _critic(pairs_run, False)["probe_auc"] >= 0.75


def test_debiasing_a_header_blind_model_fails_its_probe(pairs_run, fresh_loader):
    """debias: true turns its content signal against itself: probe_auc < 0.6, flagged."""
    assert _critic(pairs_run, True)["probe_auc"] < 0.6
