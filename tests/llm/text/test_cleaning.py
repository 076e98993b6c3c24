"""Output classes, instruction parsing and deduplication (the QC definitions)."""

from runner.llm.text.cleaning import classify, cut, normalise, parse_instruction, select_instructions
from runner.llm.text.templates import DEFAULT_TEMPLATES as T


def test_cut_at_earliest_stop_string():
    """The kept text ends before the first stop string, whichever it is."""
    assert cut("Name a fruit.\n\n### Instruction:\nmore", T) == ("Name a fruit.", "\n\n###")


def test_clean_output():
    """An output that stops at the delimiter with plain text is clean."""
    assert classify("Name a fruit.\n\n### Instruction:", "stop_string", T, "instruction").cls == "clean"


def test_clean_output_ended_by_eos():
    """An output ended by EOS with plain text is clean."""
    assert classify("Name a fruit.", "eos", T, "instruction").cls == "clean"


def test_runaway_tag_before_cut():
    """A template tag inside the kept text (no newline before it) is runaway."""
    raw = "Name a fruit. ### Response:\nApple\n\n### End"
    assert classify(raw, "stop_string", T, "response").cls == "runaway"


def test_runaway_bare_tag_at_line_start():
    """A tag's bare name opening a line means the model ran into another example."""
    raw = "Apple.\nInstruction: name a colour\n\n###"
    assert classify(raw, "stop_string", T, "response").cls == "runaway"


def test_runaway_second_instruction():
    """An instruction with a blank line holds a second example: runaway."""
    raw = "Name a fruit.\n\nName a colour.\n\n### Instruction:"
    assert classify(raw, "stop_string", T, "instruction").cls == "runaway"


def test_blank_line_in_response_is_clean():
    """A response may have paragraphs: a blank line alone is no runaway there."""
    assert classify("One.\n\nTwo.\n\n### End", "stop_string", T, "response").cls == "clean"


def test_token_limit():
    """No stop string and no EOS before max_new_tokens: token_limit."""
    assert classify("Name a fruit and then", "max_new_tokens", T, "instruction").cls == "token_limit"


def test_runaway_wins_over_token_limit():
    """An output that ran into another example and hit the limit counts as runaway."""
    raw = "### Instruction:\nName a fruit and"
    assert classify(raw, "max_new_tokens", T, "instruction").cls == "runaway"


def test_leakage_fragment_in_text():
    """A delimiter fragment left mid-text is leakage."""
    assert classify("Apple ### pear\n\n### End", "stop_string", T, "response").cls == "leakage"


def test_leakage_truncated_delimiter_at_end():
    """A text ending in a cut-off delimiter (`##`) is leakage."""
    assert classify("Apple and pear.\n##", "eos", T, "response").cls == "leakage"


def test_c_sharp_is_not_leakage():
    """`C#` is a word, not a truncated delimiter."""
    assert classify("Write it in C#", "eos", T, "instruction").cls == "clean"


def test_parse_instruction_of_runaway_takes_first_paragraph():
    """A runaway's instruction is its first paragraph (kept for review)."""
    cleaned = classify("Name a fruit.\n\nName a colour.", "eos", T, "instruction")
    assert parse_instruction(cleaned, T) == "Name a fruit."


def test_parse_instruction_empty_is_none():
    """An empty output parses to no instruction."""
    assert parse_instruction(classify("  \n", "eos", T, "instruction"), T) is None


def test_normalise():
    """Normalisation case-folds, drops punctuation and collapses whitespace."""
    assert normalise("  Name,  THREE fruits!\n") == "name three fruits"


def test_dedup_exact_and_normalised():
    """Exact and normalised duplicates are dropped, first occurrence kept, in order."""
    recs = [{"id": i, "instruction": s, "keep": True}
            for i, s in enumerate(["Name a fruit.", "Name a fruit.", "name a FRUIT", "Sing."])]
    selected, dups = select_instructions(recs)
    assert ([r["id"] for r in selected], dups) == ([0, 3], 2)


def test_dedup_skips_records_not_kept():
    """Records not kept are neither selected nor counted as duplicates."""
    recs = [{"id": 0, "instruction": "A", "keep": False}, {"id": 1, "instruction": "A", "keep": True}]
    assert select_instructions(recs) == ([recs[1]], 0)


def test_dedup_limit():
    """At most `limit` instructions are selected."""
    recs = [{"id": i, "instruction": f"task {i}", "keep": True} for i in range(5)]
    assert len(select_instructions(recs, limit=3)[0]) == 3
