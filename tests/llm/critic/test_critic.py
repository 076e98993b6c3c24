"""The single-token A/B critic: label check, renormalised p(A), verdicts, score re-use."""

import math

import pytest
import torch

from runner.llm.critic import scoring as critic
from runner.llm.loading import loader
from runner.llm.stage1.phases import critic_filter
from runner.llm.text.prompts import instruction_critic_prompt

PAIRS = [
    {"id": f"i{n}", "stage": "responses", "instruction": f"task {n}", "response": f"answer {n}",
     "keep": True, "class": "clean"}
    for n in range(5)
]


@pytest.fixture
def lm(tiny_model, fresh_loader):
    """The tiny model, loaded."""
    return loader.load_model({"path": str(tiny_model)})


def test_single_token_labels_accepted(lm):
    """' A' and ' B' are one token each in the tiny tokenizer."""
    a, b = critic.label_token_ids(lm.tokenizer, [" A", " B"], "c")
    assert a != b


def test_multi_token_label_error_names_labels_and_tokens(lm):
    """A label of several tokens fails naming each label and its tokens."""
    expected = r"' A' -> \['ĠA'\] \(1 tokens\), ' Absolutely' -> \[.+\] \([2-9] tokens\)"
    with pytest.raises(critic.LabelError, match=expected):
        critic.label_token_ids(lm.tokenizer, [" A", " Absolutely"], "c")


def test_p_a_is_renormalised_over_a_and_b():
    """p_a = exp(la) / (exp(la) + exp(lb)) and margin = la - lb."""
    s = critic.Score.from_logprobs(-1.0, -3.0)
    assert math.isclose(s.p_a, math.exp(-1) / (math.exp(-1) + math.exp(-3))) and s.margin == 2.0


def test_verdict_accepts_at_threshold():
    """A record is accepted when p_a >= threshold, rejected below."""
    s = critic.Score.from_logprobs(0.0, 0.0)  # p_a = 0.5
    assert (s.accepted(0.5), s.accepted(0.5001)) == (True, False)


def test_batched_scores_match_single_forward(lm):
    """Left-padded batched scoring equals an unpadded full forward of each prompt."""
    prompts = [instruction_critic_prompt([], x) for x in ("Sing.", "Name three fruits now.")]
    ids = lm.encode(prompts)
    labels = critic.label_token_ids(lm.tokenizer, [" A", " B"], "c")
    batched = critic.score_prompts(lm, ids, labels)
    with torch.no_grad():
        single = [lm.model(torch.tensor([row])).logits[0, -1].log_softmax(-1) for row in ids]
    got = [x for s in batched for x in (s.logprob_a, s.logprob_b)]
    want = [r[label].item() for r in single for label in labels]
    assert got == pytest.approx(want, abs=1e-4)


def test_one_forward_pass_per_batch(lm):
    """Scoring a batch of prompts runs a single forward pass."""
    before = critic.forward_calls()
    critic.score_prompts(lm, lm.encode(["a", "bb", "ccc"]), (5, 6))
    assert critic.forward_calls() - before == 1


def test_score_cache_round_trip(tmp_path):
    """A stored score reads back equal; an unknown key reads None."""
    cache = critic.ScoreCache(tmp_path)
    key = cache.key("m", "prompt", [" A", " B"])
    cache.put(key, critic.Score.from_logprobs(-1.0, -2.0))
    assert cache.get(key) == critic.Score.from_logprobs(-1.0, -2.0) and cache.get("0" * 64) is None


def test_threshold_only_iterate_reuses_scores(local_run, fresh_loader):
    """Changing only the threshold re-uses stored scores: no model load, no forward pass."""
    local_run.add_records("src", PAIRS)
    local_run.run("pc", critic_filter, {"source": "src", "confidence_threshold": 0.0})
    loader.clear_models()  # as in a fresh `resume` process
    loads, forwards = loader.load_count(), critic.forward_calls()
    again = local_run.run("pc", critic_filter, {"source": "src", "confidence_threshold": 1.0},
                          iteration=2)
    assert (loader.load_count() - loads, critic.forward_calls() - forwards) == (0, 0)
    assert (again["cache_hits"], again["accepted"]) == (5, 0)
