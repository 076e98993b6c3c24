"""The critic's probe set: planted bad items from the run's own items, held-out gold."""

from hypothesis import given
from hypothesis import strategies as st

from runner.llm.stage1 import probes

PAIRS = [{"id": f"r{n}", "instruction": f"Task number {n} please.",
          "response": f"This is the full answer number {n} to the task."} for n in range(10)]
INSTRUCTIONS = [{"id": f"i{n}", "instruction": f"Write a poem about the sea number {n}."}
                for n in range(10)]


def test_mismatched_pairs_never_keep_their_own_response():
    """Each instruction gets another instruction's response (a derangement)."""
    bad = [b for b in probes.planted_bad(PAIRS, "pair", 7, 10) if b["probe"] == "mismatched"]
    own = {p["instruction"]: p["response"] for p in PAIRS}
    assert len(bad) == 10 and all(own[b["instruction"]] != b["response"] for b in bad)


@given(st.integers(min_value=2, max_value=40), st.integers(min_value=0, max_value=10**9))
def test_derangement_has_no_fixed_point(n, seed):
    """Sattolo's permutation moves every index."""
    import random

    perm = probes._derangement(n, random.Random(seed))
    assert sorted(perm) == list(range(n)) and all(perm[i] != i for i in range(n))


def test_truncated_responses_keep_the_first_words():
    """A truncated response is its first TRUNCATE_WORDS words."""
    bad = [b for b in probes.planted_bad(PAIRS, "pair", 7, 10) if b["probe"] == "truncated"]
    assert bad and all(b["response"] == "This is the" for b in bad)


def test_instruction_probes_are_shuffled_or_cut():
    """Instructions are word-shuffled (same words, new order) or cut to their first third."""
    bad = probes.planted_bad(INSTRUCTIONS, "instruction", 3, 4)
    by_kind = {k: [b for b in bad if b["probe"] == k] for k in ("shuffled", "truncated")}
    source = {it["instruction"] for it in INSTRUCTIONS}
    assert all(b["instruction"] not in source and len(b["instruction"].split()) == 8
               for b in by_kind["shuffled"])
    assert [b["instruction"] for b in by_kind["truncated"]] == ["Write a"] * 4


def test_probe_draw_depends_only_on_seed():
    """The same seed plants the same items; another seed may pick others."""
    assert probes.planted_bad(PAIRS, "pair", 1, 4) == probes.planted_bad(PAIRS, "pair", 1, 4)


def test_limit_caps_the_sampled_items():
    """At most `limit` source items are used (two bad items each for pairs)."""
    assert len(probes.planted_bad(PAIRS, "pair", 1, 3)) == 6


def test_single_pair_gives_no_mismatch():
    """One item has no other response to borrow: only its truncation is planted."""
    assert [b["probe"] for b in probes.planted_bad(PAIRS[:1], "pair", 1, 5)] == ["truncated"]


def test_planted_good_are_the_accepted_gold_examples():
    """Accepted pool examples become good probes, tagged with their pool index."""
    pool = [{"instruction": "a"}, {"instruction": "b"}, {"instruction": "c"}]
    assert [g["pool_index"] for g in probes.planted_good(pool, [True, False, True])] == [0, 2]


def test_too_small_names_the_counts():
    """Fewer than MIN_PER_SIDE on a side gives the reason, with the counts."""
    assert "3 planted good and 9 planted bad" in probes.too_small(3, 9, True)


def test_no_pool_says_to_give_fewshot():
    """Without a labelled few-shot file there is no gold: the reason says what to give."""
    assert "with.fewshot" in probes.too_small(0, 9, False)


def test_big_enough_has_no_reason():
    """Four of each is enough."""
    assert probes.too_small(4, 4, True) is None
