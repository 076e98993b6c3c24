"""Label-order debiasing and the probe figures: p_yes, label_bias, ROC AUC, accuracy."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.llm.critic.calibration import Judgement, accuracy_at, label_bias, roc_auc

probs = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def test_p_yes_averages_both_orders():
    """p_yes = (p(A | yes=A) + 1 - p(A | yes=B)) / 2."""
    assert Judgement(0.9, 0.3).p_yes == pytest.approx((0.9 + 0.7) / 2)


def test_p_yes_without_debiasing_is_the_raw_score():
    """With one order only, p_yes is p(first label)."""
    assert Judgement(0.8, None).p_yes == 0.8


@given(probs, probs, st.floats(min_value=-0.3, max_value=0.3))
def test_constant_label_preference_cancels(p_ab, p_ba, shift):
    """A preference for the first label that adds the same to both orders leaves p_yes as is."""
    if not (0 <= p_ab + shift <= 1 and 0 <= p_ba + shift <= 1):
        return
    assert Judgement(p_ab + shift, p_ba + shift).p_yes == pytest.approx(Judgement(p_ab, p_ba).p_yes)


def test_always_a_critic_is_half_for_everything():
    """A model that says A with p=0.93 whatever it reads scores every item 0.5 once debiased."""
    assert {round(Judgement(0.93, 0.93).p_yes, 9)} == {0.5}


def test_label_bias_is_mean_raw_first_label_minus_half():
    """label_bias averages every raw p(first label) of items scored both ways, minus 0.5."""
    assert label_bias([Judgement(0.9, 0.7), Judgement(0.8, None)]) == pytest.approx(
        (0.9 + 0.7) / 2 - 0.5)


def test_label_bias_needs_both_orders():
    """From one order alone, bias cannot be told from good items: no figure."""
    assert label_bias([Judgement(0.99, None)]) is None


def test_label_bias_of_nothing_is_none():
    """No items, no figure."""
    assert label_bias([]) is None


def test_auc_perfect_and_reversed():
    """All good above all bad is 1.0; all below is 0.0."""
    assert (roc_auc([0.9, 0.8], [0.1, 0.2]), roc_auc([0.1], [0.9, 0.8])) == (1.0, 0.0)


def test_auc_ties_count_half():
    """Equal scores on both sides count half: an always-0.5 critic is exactly chance."""
    assert roc_auc([0.5, 0.5, 0.5], [0.5, 0.5]) == 0.5


def test_auc_of_an_empty_side_is_none():
    """No good or no bad items: no figure."""
    assert (roc_auc([], [0.1]), roc_auc([0.1], [])) == (None, None)


@given(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=1, max_size=12),
       st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=1, max_size=12))
def test_auc_equals_pairwise_definition(good, bad):
    """The rank computation equals P(good > bad) + P(tie)/2 over all pairs."""
    pairs = [(g > b) + 0.5 * (g == b) for g in good for b in bad]
    assert roc_auc(good, bad) == pytest.approx(sum(pairs) / len(pairs))


def test_accuracy_at_threshold():
    """Good at or above the threshold and bad below it are right."""
    assert accuracy_at([0.6, 0.4], [0.2, 0.5], 0.5) == 0.5
