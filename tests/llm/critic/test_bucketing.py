"""Length-bucketed critic batches: bounded padding, same scores and verdicts, same order."""

import random

import pytest

from runner.llm.critic import scoring as critic
from runner.llm.critic.bucketing import bucket_stats, plan_buckets
from runner.llm.loading import loader
from runner.llm.text.prompts import pair_critic_prompt

_RNG = random.Random(4)
MIX = [_RNG.randint(20, 400) for _ in range(2000)]


def test_every_row_lands_in_exactly_one_bucket():
    """The plan is a partition of the rows."""
    groups = plan_buckets(MIX)
    assert sorted(i for g in groups for i in g) == list(range(len(MIX)))


def test_padding_waste_on_a_20_to_400_mix_is_at_most_10_percent():
    """Prompts spread from 20 to 400 tokens waste at most 10% (padded over real)."""
    assert bucket_stats(MIX, plan_buckets(MIX, min_tokens=0)).padding_waste <= 0.10


def test_unbucketed_mix_wastes_far_more():
    """The same mix as one padded batch wastes about as much as it uses (why buckets)."""
    assert bucket_stats(MIX, [list(range(len(MIX)))]).padding_waste > 0.8


def test_buckets_respect_the_token_budget():
    """No bucket of several rows pads to more than max_tokens."""
    groups = plan_buckets(MIX, max_tokens=8192)
    assert max(max(MIX[i] for i in g) * len(g) for g in groups if len(g) > 1) <= 8192


def test_small_batches_stay_one_forward():
    """Under min_tokens padded tokens, a few short prompts stay in one forward."""
    assert plan_buckets([3, 9, 5, 12], min_tokens=64) == [[0, 2, 1, 3]]


def test_a_prompt_longer_than_the_budget_gets_its_own_bucket():
    """A single row over max_tokens is still scored, alone."""
    assert plan_buckets([10, 5000, 12], max_tokens=1024, min_tokens=0) == [[0, 2], [1]]


@pytest.fixture
def lm(tiny_model, fresh_loader):
    """The tiny model, loaded."""
    return loader.load_model({"path": str(tiny_model)})


def mixed_prompts(lm):
    """Pair-critic prompts whose lengths spread over a factor of about ten."""
    rng = random.Random(1)
    words = "sea poem fruit sky blue list name three write explain".split()
    items = []
    for n in range(24):
        answer = " ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
        items.append({"instruction": f"task {n}", "response": answer})
    return lm.encode([pair_critic_prompt([], it["instruction"], it["response"]) for it in items])


def scored(lm, ids, bucketed, stats=None):
    labels = critic.label_token_ids(lm.tokenizer, [" A", " B"], "c")
    return critic.score_prompts(lm, ids, labels, bucketed=bucketed, max_tokens=200,
                                stats=stats)


def test_bucketed_p_a_equals_unbucketed(lm):
    """Bucketed scoring gives each prompt the unbucketed p_a, in the order given."""
    ids = mixed_prompts(lm)
    got = [s.p_a for s in scored(lm, ids, True)]
    assert got == pytest.approx([s.p_a for s in scored(lm, ids, False)], abs=1e-5)


def test_bucketed_verdicts_equal_unbucketed(lm):
    """Accept/reject at several thresholds is identical with and without buckets."""
    ids = mixed_prompts(lm)
    a, b = scored(lm, ids, True), scored(lm, ids, False)
    for threshold in (0.2, 0.5, 0.8):
        assert [s.accepted(threshold) for s in a] == [s.accepted(threshold) for s in b]


def test_bucketed_scoring_reports_its_padding(lm):
    """`stats` tells forwards and padding waste, and buckets pad less than one batch."""
    ids = mixed_prompts(lm)
    bucketed, plain = {}, {}
    scored(lm, ids, True, bucketed)
    scored(lm, ids, False, plain)
    assert bucketed["forwards"] > 1 and bucketed["padding_waste"] < plain["padding_waste"]
