"""McNemar's exact test of paired pass/fail outcomes (base model vs tuned model).

Both models answer the same items, so their verdicts are paired; only the *discordant* pairs
say which model is better: `b` = items the base passes and the tuned model fails, `c` = items
the base fails and the tuned model passes. Under the null hypothesis (neither is better) each
discordant pair goes either way with probability 1/2, so `b ~ Binomial(b + c, 1/2)` and the
two-sided exact p-value is

    p = min(1, 2 * P[X <= min(b, c)]),   X ~ Binomial(b + c, 1/2);   p = 1 when b + c == 0.

The *directional* verdict (`mcnemar_one_sided`) asks whether the tuned model is better:
P[X >= c] for X ~ Binomial(b + c, 1/2), where c counts the items only the tuned model passes;
the same with b and c exchanged asks whether it is worse. A two-sided "significant" only says
the two models differ, which a model made worse by tuning also satisfies.

For p = 1/2 the binomial is symmetric, so this equals the "sum of outcomes no more likely than
the observed one" rule of `scipy.stats.binomtest` (a test cross-checks it; scipy is not a
runtime dependency). The tail is computed in exact integer arithmetic: sum of C(n, i) for
i <= k, divided by 2**(n-1) in one correctly rounded int/int division. Python integers do not
overflow, and the quotient is at most 2, so no float ever overflows, whatever n; a tail too
small for a float rounds to 0.0. Each C(n, i+1) is derived from C(n, i) by one multiply and
one exact divide, so the cost stays near-linear in k for the sizes an evaluation set has.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["McNemar", "binomial_half_cdf", "discordant", "mcnemar_exact", "mcnemar_one_sided",
           "mcnemar_test"]


def _tail_count(k: int, n: int) -> int:
    """sum_{i=0..k} C(n, i), exactly."""
    total, term = 0, 1  # term = C(n, i), starting at C(n, 0)
    for i in range(k + 1):
        total += term
        term = term * (n - i) // (i + 1)  # C(n, i+1); exact: C(n,i)*(n-i) is divisible by i+1
    return total


def binomial_half_cdf(k: int, n: int) -> float:
    """P[X <= k] for X ~ Binomial(n, 1/2), computed exactly and rounded once."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return _tail_count(k, n) / (1 << n)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value of `b` and `c` discordant pairs (1.0 when none)."""
    for name, value in (("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    if 2 * k >= n:  # b == c: the tail holds at least half the mass, so 2 * tail >= 1
        return 1.0
    # 2 * tail / 2**n == tail / 2**(n - 1): one exact division, no rounding before it.
    return min(1.0, _tail_count(k, n) / (1 << (n - 1)))


def mcnemar_one_sided(b: int, c: int) -> float:
    """One-sided exact McNemar p-value that the tuned model is better: P[X >= c], X ~
    Binomial(b + c, 1/2), where c counts the items only the tuned model passes (1.0 when
    b + c == 0). Swap the arguments for the p-value that it is worse.

    By the symmetry of Binomial(n, 1/2), P[X >= c] = P[X <= n - c] = P[X <= b], so this is
    one exact lower tail, like the two-sided test.
    """
    for name, value in (("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return binomial_half_cdf(b, b + c) if b + c else 1.0


def discordant(pairs: Iterable[tuple[bool, bool]]) -> tuple[int, int]:
    """(b, c) of (base_pass, tuned_pass) pairs: b = base only passes, c = tuned only passes."""
    b = c = 0
    for base_ok, tuned_ok in pairs:
        if base_ok and not tuned_ok:
            b += 1
        elif tuned_ok and not base_ok:
            c += 1
    return b, c


@dataclass(frozen=True)
class McNemar:
    """The test's counts and verdict at significance level `alpha`."""

    b: int
    c: int
    p_value: float
    alpha: float

    @property
    def significant(self) -> bool:
        """True when the p-value is below `alpha` (strictly)."""
        return self.p_value < self.alpha


def mcnemar_test(pairs: Iterable[tuple[bool, bool]], alpha: float = 0.01) -> McNemar:
    """Count the discordant pairs of (base_pass, tuned_pass) and test them."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    b, c = discordant(pairs)
    return McNemar(b, c, mcnemar_exact(b, c), alpha)
