"""The release verdict in words and the per-checker table (evaluation/verdict.py)."""

from runner.llm.evaluation.phase import _metrics
from runner.llm.evaluation.verdict import checker_table, verdict_words, write_verdict


def _records(base: list[bool], sft: list[bool], checker: str = "word_count") -> list[dict]:
    return [{"checker": checker, "base_pass": b, "sft_pass": s} for b, s in zip(base, sft)]


WORSE = _records([True] * 13 + [False] * 35, [False] * 12 + [True] + [True] + [False] * 34)


def test_issue_regression_is_significant_but_not_improved():
    """b=12, c=1 of 48: significant (two-sided) yet improved=0 and regressed=1."""
    m = _metrics(WORSE, 0.01)
    assert (m["discordant_b"], m["discordant_c"], m["significant"], m["improved"],
            m["regressed"]) == (12, 1, 1, 0, 1)


def test_improvement_is_sft_minus_base():
    """improvement = sft_pass_rate - base_pass_rate."""
    m = _metrics(WORSE, 0.01)
    assert m["improvement"] == m["sft_pass_rate"] - m["base_pass_rate"] < 0


def test_improved_needs_more_passes_and_small_p():
    """c=12 against b=1 at alpha 0.01: improved."""
    better = [{**r, "base_pass": r["sft_pass"], "sft_pass": r["base_pass"]} for r in WORSE]
    m = _metrics(better, 0.01)
    assert (m["improved"], m["regressed"]) == (1, 0)


def test_no_discordant_pairs_is_neither():
    """Identical verdicts: neither improved nor regressed."""
    m = _metrics(_records([True, False], [True, False]), 0.01)
    assert (m["improved"], m["regressed"], m["p_improved"]) == (0, 0, 1.0)


def test_words_say_worse_plainly():
    """A regressed model is called WORSE and not to be released."""
    text = verdict_words(_metrics(WORSE, 0.01), 0.01)
    assert "WORSE" in text and "do not release" in text


def test_words_say_worse_even_when_not_significant():
    """Fewer passes without significance is still called worse."""
    m = _metrics(_records([True, True, False], [True, False, False]), 0.01)
    assert "worse than the base model" in verdict_words(m, 0.01)


def test_checker_table_lists_worst_change_first():
    """Per-checker rates for both models, the kind that got worst first."""
    recs = _records([True, True], [False, False], "json") + _records([False], [True], "ending")
    rows = checker_table(recs)
    assert [(r["checker"], r["base"], r["sft"]) for r in rows] == [("json", 1.0, 0.0), ("ending", 0.0, 1.0)]


def test_write_verdict_names_the_worse_checkers(tmp_path):
    """review.md names the kinds of instruction that got worse."""
    recs = _records([True], [False], "json") + _records([False], [True], "ending")
    write_verdict(tmp_path, recs, _metrics(recs, 0.01), 0.01)
    assert "worse on: `json`." in (tmp_path / "review.md").read_text()
