"""Label-order debiasing and the critic's self-test figures (pure arithmetic, no model).

**Debiasing.** A small model asked "A = yes, B = no" often answers A whatever it reads: its
p(A) is label bias, not judgement. So every item is scored twice, once with yes = the first
label (A) and once with the labels' meanings exchanged (yes = B, the header and the few-shot
labels swapped with them). With `p_ab` = p(first label) in the first prompt and `p_ba` =
p(first label) in the swapped one,

    p_yes = (p_ab + (1 - p_ba)) / 2

A preference for the first label whatever the question adds the same amount to `p_ab` and to
`p_ba`, so it cancels in `p_yes`; only what moves with the meaning of the labels remains.
`label_bias` = mean over every raw score of p(first label) - 0.5: 0 for a critic without a
favourite label, near +0.5 for one that always says A.

**Self-test.** `roc_auc(good, bad)` is the probability that a planted good item gets a higher
debiased score than a planted bad one, ties counting half (the Mann-Whitney statistic over
n_good * n_bad pairs): 0.5 is chance, 1.0 perfect separation. `accuracy_at` is the share of
probe items the threshold puts on the right side (good accepted, bad rejected).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Judgement", "accuracy_at", "label_bias", "roc_auc"]


@dataclass(frozen=True)
class Judgement:
    """One item's raw p(first label) in both label orders, and the debiased p(yes)."""

    p_ab: float  # p(first label) when the first label means yes
    p_ba: float | None  # p(first label) when it means no; None when debiasing is off

    @property
    def p_yes(self) -> float:
        """The debiased yes-probability (the raw one when debiasing is off)."""
        if self.p_ba is None:
            return self.p_ab
        return (self.p_ab + (1.0 - self.p_ba)) / 2.0

    def raw(self) -> list[float]:
        """Every raw p(first label) this judgement read."""
        return [self.p_ab] if self.p_ba is None else [self.p_ab, self.p_ba]


def label_bias(judgements: Sequence[Judgement]) -> float | None:
    """Mean raw p(first label) - 0.5 over both orders of every item scored both ways.

    None when no item was scored both ways: from one order alone a preference for the first
    label cannot be told from items that deserve it.
    """
    raw = [p for j in judgements if j.p_ba is not None for p in j.raw()]
    return sum(raw) / len(raw) - 0.5 if raw else None


def roc_auc(good: Sequence[float], bad: Sequence[float]) -> float | None:
    """P(score of a good item > score of a bad one), ties half; None if a side is empty.

    Computed from ranks (sort once, average ranks over ties), so it costs n log n, not
    n_good * n_bad comparisons.
    """
    if not good or not bad:
        return None
    scored = sorted([(s, 1) for s in good] + [(s, 0) for s in bad])
    rank_sum, i = 0.0, 0
    while i < len(scored):
        j = i
        while j < len(scored) and scored[j][0] == scored[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2.0  # ranks i+1 .. j share their mean
        rank_sum += mean_rank * sum(flag for _, flag in scored[i:j])
        i = j
    n_good, n_bad = len(good), len(bad)
    return (rank_sum - n_good * (n_good + 1) / 2.0) / (n_good * n_bad)


def accuracy_at(good: Sequence[float], bad: Sequence[float], threshold: float) -> float | None:
    """Share of probe items on the right side of `threshold` (good >= it, bad below)."""
    n = len(good) + len(bad)
    if not n:
        return None
    right = sum(1 for s in good if s >= threshold) + sum(1 for s in bad if s < threshold)
    return right / n
