"""Label-order debiasing on the real model: its raw p(A) is bias, the debiased p_yes is not.

Zero-shot, as the issue measured: SmolLM2-135M answers " A" to the pair critic whatever it
reads, in both label orders. The raw first-label probability is high for good and bad pairs
alike (label_bias well above 0), and averaging both orders brings every p_yes back near 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.llm.critic import scoring
from runner.llm.critic.calibration import Judgement, label_bias
from runner.llm.loading.loader import load_model
from runner.llm.text.prompts import critic_prompt, example_accepted
from runner.llm.text.templates import DEFAULT_TEMPLATES as T

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def judged(real_model: Path) -> list[tuple[bool, Judgement]]:
    """(gold label, judgement) of each pair of fixtures/fewshot/pair_critic.jsonl, zero-shot."""
    lm = load_model({"path": str(real_model), "device": "cpu", "dtype": "float32"})
    rows = [json.loads(x) for x in (ROOT / "fixtures/fewshot/pair_critic.jsonl").read_text().splitlines()]
    labels = scoring.label_token_ids(lm.tokenizer, [" A", " B"], "real")
    raw = []
    for t in (T, T.swapped()):
        prompts = [critic_prompt("pair", [], r, t) for r in rows]
        raw.append([s.p_a for s in scoring.score_prompts(lm, lm.encode(prompts), labels)])
    return [(example_accepted(r, T), Judgement(a, b)) for r, a, b in zip(rows, *raw)]


def test_real_model_prefers_the_first_label(judged):
    """label_bias (mean raw p(A) over both orders, minus 0.5) is large: the model says A."""
    assert label_bias([j for _, j in judged]) > 0.2


def test_raw_score_accepts_bad_pairs_too(judged):
    """Without debiasing most rejected gold pairs would be accepted at 0.5."""
    bad = [j.p_ab for ok, j in judged if not ok]
    assert sum(p >= 0.5 for p in bad) / len(bad) > 0.5


def test_debiasing_brings_scores_back_to_the_middle(judged):
    """Averaged over both orders, the mean p_yes of good and of bad pairs is near 0.5."""
    for side in (True, False):
        scores = [j.p_yes for ok, j in judged if ok is side]
        assert 0.3 < sum(scores) / len(scores) < 0.7
