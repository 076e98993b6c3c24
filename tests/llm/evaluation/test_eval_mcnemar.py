"""McNemar's exact test against hand-computed values and, for larger counts, scipy."""

import pytest
from scipy.stats import binomtest

from runner.llm.evaluation.mcnemar import binomial_half_cdf, discordant, mcnemar_exact, mcnemar_test


def test_no_discordant_pairs_gives_one():
    """b = c = 0: nothing to test, p = 1."""
    assert mcnemar_exact(0, 0) == 1.0


def test_zero_against_five():
    """b=0, c=5: p = 2 * (1/2)^5 = 0.0625."""
    assert mcnemar_exact(0, 5) == 0.0625


def test_one_against_nine():
    """b=1, c=9: p = 2 * (1 + 10) / 1024 = 0.021484375."""
    assert mcnemar_exact(1, 9) == 2 * 11 / 1024 == 0.021484375


def test_equal_counts_give_one():
    """b = c = 5: p = min(1, 2 * P[X <= 5]) = 1."""
    assert mcnemar_exact(5, 5) == 1.0


def test_symmetric_in_b_and_c():
    """Swapping b and c leaves the two-sided p-value unchanged."""
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)


def test_large_case_matches_scipy():
    """b=40, c=80 agrees with scipy.stats.binomtest to 1e-12 (relative)."""
    assert mcnemar_exact(40, 80) == pytest.approx(binomtest(40, 120, 0.5).pvalue, rel=1e-12)


def test_grid_matches_scipy():
    """Every (b, c) with b, c <= 30 agrees with scipy's two-sided binomial test."""
    bad = [(b, c) for b in range(31) for c in range(31) if b + c
           and mcnemar_exact(b, c) != pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-12)]
    assert bad == []


def test_very_large_counts_do_not_overflow():
    """b=3000, c=3300 (n = 6300, 2**6300 beyond any float) matches scipy."""
    assert mcnemar_exact(3000, 3300) == pytest.approx(binomtest(3000, 6300, 0.5).pvalue,
                                                      rel=1e-9)


def test_binomial_cdf_hand_value():
    """P[X <= 1] for X ~ Bin(10, 1/2) is 11/1024."""
    assert binomial_half_cdf(1, 10) == 11 / 1024


def test_negative_count_is_refused():
    """A negative count is a ValueError."""
    with pytest.raises(ValueError, match="b must be a non-negative integer"):
        mcnemar_exact(-1, 3)


def test_discordant_counts_each_direction():
    """b counts base-only passes, c tuned-only passes; concordant pairs count for neither."""
    pairs = [(True, False), (False, True), (False, True), (True, True), (False, False)]
    assert discordant(pairs) == (1, 2)


def test_significance_is_strictly_below_alpha():
    """p = 0.0625 is significant at alpha 0.1 but not at 0.0625 itself."""
    pairs = [(False, True)] * 5
    assert (mcnemar_test(pairs, 0.1).significant, mcnemar_test(pairs, 0.0625).significant) == (
        True, False)


def test_one_sided_matches_scipy_greater():
    """p_improved = P[X >= c], X ~ Bin(b + c, 1/2): scipy's one-sided binomial test."""
    from runner.llm.evaluation.mcnemar import mcnemar_one_sided

    for b in range(0, 25):
        for c in range(0, 25):
            if b + c:
                want = binomtest(c, b + c, 0.5, alternative="greater").pvalue
                assert mcnemar_one_sided(b, c) == pytest.approx(want, rel=1e-12)


def test_one_sided_issue_case():
    """The issue's run (b=12 base-only, c=1 tuned-only): not improved, clearly regressed."""
    from runner.llm.evaluation.mcnemar import mcnemar_one_sided

    assert mcnemar_one_sided(12, 1) == pytest.approx(0.99988, abs=1e-5)
    assert mcnemar_one_sided(1, 12) == pytest.approx(0.0017090, abs=1e-6)


def test_one_sided_without_discordant_pairs_is_one():
    """No discordant pair: no evidence either way."""
    from runner.llm.evaluation.mcnemar import mcnemar_one_sided

    assert mcnemar_one_sided(0, 0) == 1.0
