"""Length buckets for batched forward passes: little padding, few forwards.

A left-padded batch costs (rows × longest row) tokens of compute whatever its real length, so
one batch of prompts spread from 20 to 400 tokens computes about twice what it uses. Sorting
by length and cutting the sorted list into groups bounds the waste: a group is closed when
adding the next (longer) prompt would make its padding more than `max_waste` of its real
tokens, or its padded size pass `max_tokens` (the memory bound of one forward).

Groups whose padded size stays under `min_tokens` may waste more: a forward that small is
bound by the host's per-op dispatch, not the GPU, so splitting it would cost a whole extra
dispatch to save padding that costs nearly nothing. That also keeps a handful of short
prompts in one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BucketStats", "bucket_stats", "plan_buckets"]


@dataclass(frozen=True)
class BucketStats:
    """What a plan costs: forwards, real and padded tokens, and waste = padding / real."""

    forwards: int
    real_tokens: int
    padded_tokens: int

    @property
    def padding_waste(self) -> float:
        """Padding tokens over real tokens (0.0 for no padding)."""
        if self.real_tokens == 0:
            return 0.0
        return (self.padded_tokens - self.real_tokens) / self.real_tokens


def plan_buckets(
    lengths: list[int],
    max_waste: float = 0.10,
    max_tokens: int = 32768,
    min_tokens: int = 4096,
    max_rows: int = 1024,
) -> list[list[int]]:
    """Groups of row indices, shortest rows first; each group is one padded forward.

    A group never has more than `max_rows` rows nor (unless it is a single row) more than
    `max_tokens` padded tokens; its padding is at most `max_waste` of its real tokens unless
    its padded size is at most `min_tokens`.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    groups: list[list[int]] = []
    group: list[int] = []
    real = 0
    for i in order:
        width = lengths[i]  # ascending, so the newcomer sets the group's width
        rows = len(group) + 1
        padded, used = width * rows, real + width
        fits = bool(group) and rows <= max_rows and padded <= max_tokens and (
            padded <= min_tokens or padded - used <= max_waste * used)
        if group and not fits:
            groups.append(group)
            group, used = [], width
        group.append(i)
        real = used
    if group:
        groups.append(group)
    return groups


def bucket_stats(lengths: list[int], groups: list[list[int]]) -> BucketStats:
    """The cost of running `groups` as left-padded batches."""
    real = sum(lengths[i] for g in groups for i in g)
    padded = sum(max(lengths[i] for i in g) * len(g) for g in groups if g)
    return BucketStats(sum(1 for g in groups if g), real, padded)
