"""The critic's probe set: planted bad items made from the run's own items, and held-out gold.

A `critic_filter` phase scores these besides its records and never writes them as records;
`probe_auc` says whether its debiased score tells the planted good from the planted bad.

**Planted bad** (drawn with a generator seeded by the phase seed; at most `limit` source items):

* pairs: `mismatched` - each sampled instruction with another sampled instruction's response
  (a derangement: a random cyclic permutation, so no item keeps its own response; needs at
  least two items), and `truncated` - the response cut to its first `TRUNCATE_WORDS` words
  (only responses of at least `2 * TRUNCATE_WORDS` words, so the cut is plainly unfinished);
* instructions: `shuffled` - the instruction's words in a new random order (at least 3 words,
  never the original order), and `truncated` - its first third of words, at least one,
  trailing punctuation dropped (at least 4 words).

**Planted good** (`gold`): every accepted example of the few-shot file. Each is scored in a
prompt whose few-shot examples are drawn from the pool without it (`prompts.pick_balanced`
with `exclude`), so no prompt shows the model the answer to the item it judges.

A figure needs at least `MIN_PER_SIDE` items on each side; otherwise `too_small` says why.
"""

from __future__ import annotations

import random
from typing import Any

from runner.store.batches import row_seed

__all__ = ["MIN_PER_SIDE", "TRUNCATE_WORDS", "planted_bad", "planted_good", "too_small"]

MIN_PER_SIDE = 4
TRUNCATE_WORDS = 3


def _sample(items: list[dict[str, Any]], limit: int, rng: random.Random) -> list[dict[str, Any]]:
    return rng.sample(items, min(limit, len(items)))


def _derangement(n: int, rng: random.Random) -> list[int]:
    """A random cyclic permutation of range(n) (Sattolo): no index maps to itself."""
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def _bad_pairs(items: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if len(items) >= 2:
        for it, k in zip(items, _derangement(len(items), rng)):
            out.append({"id": f"mismatched/{it['id']}", "probe": "mismatched",
                        "instruction": it["instruction"], "response": items[k]["response"]})
    for it in items:
        words = str(it["response"]).split()
        if len(words) >= 2 * TRUNCATE_WORDS:
            out.append({"id": f"truncated/{it['id']}", "probe": "truncated",
                        "instruction": it["instruction"],
                        "response": " ".join(words[:TRUNCATE_WORDS])})
    return out


def _bad_instructions(items: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for it in items:
        words = str(it["instruction"]).split()
        if len(words) >= 3 and len(set(words)) > 1:
            shuffled = words[:]
            while shuffled == words:
                rng.shuffle(shuffled)
            out.append({"id": f"shuffled/{it['id']}", "probe": "shuffled",
                        "instruction": " ".join(shuffled)})
        if len(words) >= 4:
            cut = " ".join(words[: max(1, len(words) // 3)]).rstrip(".?!:;,")
            out.append({"id": f"truncated/{it['id']}", "probe": "truncated", "instruction": cut})
    return out


def planted_bad(items: list[dict[str, Any]], kind: str, seed: int, limit: int) -> list[dict[str, Any]]:
    """Bad probe items made from up to `limit` of the phase's own items (see the docstring)."""
    rng = random.Random(row_seed(seed, 0, "probes"))
    picked = _sample(items, limit, rng)
    return _bad_pairs(picked, rng) if kind == "pair" else _bad_instructions(picked, rng)


def planted_good(pool: list[dict[str, Any]], accepted: list[bool]) -> list[dict[str, Any]]:
    """The accepted gold examples of the few-shot pool, each tagged with its pool index."""
    return [{"id": f"gold/{n}", "probe": "gold", "pool_index": n,
             **{k: v for k, v in ex.items() if k in ("instruction", "response")}}
            for n, (ex, ok) in enumerate(zip(pool, accepted)) if ok]


def too_small(n_good: int, n_bad: int, has_pool: bool) -> str | None:
    """Why the probe set gives no figure, or None when it is big enough."""
    if not has_pool:
        return ("no gold examples: give with.fewshot a labelled file (accept: true/false) "
                "so held-out accepted examples can be planted as good items")
    if n_good < MIN_PER_SIDE or n_bad < MIN_PER_SIDE:
        return (f"probe set too small: {n_good} planted good and {n_bad} planted bad items, "
                f"at least {MIN_PER_SIDE} of each are needed (more accepted examples in "
                "with.fewshot, more source items, or a larger with.probes)")
    return None
