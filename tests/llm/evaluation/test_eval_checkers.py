"""The verifiable-instruction checkers: a passing and a failing output for each, and edges."""

import pytest

from runner.llm.evaluation import verifiable as v


def test_max_words():
    """Ten words pass `max_words(10)`; eleven fail."""
    ten = "one two three four five six seven eight nine ten"
    assert (v.max_words(ten, n=10), v.max_words(ten + " eleven", n=10)) == (True, False)


def test_min_words():
    """Five words pass `min_words(5)`; four fail."""
    assert (v.min_words("a b c d e", n=5), v.min_words("a b c d", n=5)) == (True, False)


def test_all_caps():
    """Only capitals (digits and punctuation allowed) pass; one lowercase letter fails."""
    assert (v.all_caps("RIVERS RUN, 2 OF THEM!"), v.all_caps("RIVERS Run")) == (True, False)


def test_all_lowercase():
    """Only lowercase passes; one capital fails."""
    assert (v.all_lowercase("rivers run to the sea."),
            v.all_lowercase("Rivers run to the sea.")) == (True, False)


def test_contains_keyword():
    """The keyword as a word passes, in any case; only inside a longer word fails."""
    assert (v.contains_keyword("A Lantern glowed.", keyword="lantern"),
            v.contains_keyword("The lanterns glowed.", keyword="lantern")) == (True, False)


def test_avoids_keyword():
    """Text without the keyword passes; the keyword in another case fails."""
    assert (v.avoids_keyword("The river is wide.", keyword="water"),
            v.avoids_keyword("WATER everywhere.", keyword="water")) == (True, False)


def test_exact_lines():
    """Three non-blank lines pass `exact_lines(3)` (blank lines not counted); two fail."""
    assert (v.exact_lines("one\n\ntwo\nthree\n", n=3), v.exact_lines("one\ntwo", n=3)) == (
        True, False)


def test_ends_with():
    """The exact phrase at the end (trailing spaces aside) passes; another case fails."""
    assert (v.ends_with("Nice walk. That is all.  \n", phrase="That is all."),
            v.ends_with("Nice walk. that is all.", phrase="That is all.")) == (True, False)


def test_starts_with():
    """The exact phrase first (leading spaces aside) passes; later in the text fails."""
    assert (v.starts_with("  Dear friend, hello.", phrase="Dear friend"),
            v.starts_with("Hello, Dear friend.", phrase="Dear friend")) == (True, False)


def test_json_object():
    """A JSON object passes; a JSON array fails."""
    assert (v.json_object('{"name": "river", "mood": "calm"}'),
            v.json_object('["river", "calm"]')) == (True, False)


def test_numbered_list():
    """Items 1..3 (an intro line allowed) pass `numbered_list(3)`; items 1, 2, 4 fail."""
    assert (v.numbered_list("Here:\n1. sun\n2) moon\n3. stars", n=3),
            v.numbered_list("1. sun\n2. moon\n4. stars", n=3)) == (True, False)


def test_no_commas():
    """Text without a comma passes; one comma fails."""
    assert (v.no_commas("Rivers run to the sea."), v.no_commas("Rivers run, and run.")) == (
        True, False)


def test_every_checker_fails_on_empty_output():
    """An empty answer follows no instruction, whatever the checker."""
    args = {"max_words": {"n": 5}, "min_words": {"n": 1}, "contains_keyword": {"keyword": "x"},
            "avoids_keyword": {"keyword": "x"}, "exact_lines": {"n": 1},
            "ends_with": {"phrase": "x"}, "starts_with": {"phrase": "x"},
            "numbered_list": {"n": 1}}
    assert [n for n in v.CHECKERS if v.check(n, "  \n ", args.get(n, {}))] == []


def test_json_object_accepts_one_code_fence():
    """A JSON object inside one ```json fence passes."""
    assert v.json_object('```json\n{"a": 1}\n```')


def test_json_object_refuses_empty_object():
    """`{}` is valid JSON but says nothing: it fails."""
    assert not v.json_object("{}")


def test_check_refuses_unknown_checker():
    """An unknown checker name is a ValueError naming the known ones."""
    with pytest.raises(ValueError, match="unknown checker 'shout'"):
        v.check("shout", "HI", {})


def test_check_refuses_wrong_args():
    """Args that are not the checker's parameters are a ValueError."""
    with pytest.raises(ValueError, match="takes args"):
        v.check("max_words", "hi", {"count": 3})


def test_check_refuses_non_integer_count():
    """A count that is not a positive integer is a ValueError."""
    with pytest.raises(ValueError, match="must be int"):
        v.check("exact_lines", "hi", {"n": "3"})
