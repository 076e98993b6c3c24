"""Stops found on the host a block at a time, at the token the per-token check finds."""

import pytest

from runner.llm.decoding.basics import RowStops, decode_many, take_rows
from runner.llm.decoding.generation import StopChecker
from runner.llm.loading import loader

TEXT = "Apple pie.\n\n### End of it"
STOP = "\n\n###"


@pytest.fixture
def tok(tiny_model, fresh_loader):
    """The tiny model's tokenizer."""
    return loader.load_tokenizer({"path": str(tiny_model)})


def blocks(ids, size):
    return [ids[k : k + size] for k in range(0, len(ids), size)]


def test_stop_string_found_at_the_same_token_for_every_block_size(tok):
    """Whatever the block size, the row ends at the token StopChecker fires on first."""
    ids = tok.encode(TEXT, add_special_tokens=False)
    checker = StopChecker(tok, (STOP,))
    first = next(n for n in range(1, len(ids) + 1) if checker.hit(ids[:n]))
    ends = set()
    for size in range(1, len(ids) + 1):
        rows = RowStops(tok, set(), 1, (STOP,))
        for block in blocks(ids, size):
            rows.take([block])
        ends.add((rows.how[0], tuple(rows.out[0])))
    assert ends == {("stop_string", tuple(ids[:first]))}


def test_eos_ends_the_row_and_is_not_kept(tok):
    """Tokens after the first EOS of a block are dropped, the EOS too."""
    rows = RowStops(tok, {1}, 2, ())
    rows.take([[5, 6, 1, 7], [5, 6, 7, 8]])
    rows.take([[9, 9, 9, 9], [1, 9, 9, 9]])
    assert [(g.stopped_by, g.token_ids) for g in rows.results()] == [
        ("eos", (5, 6)), ("eos", (5, 6, 7, 8))]


def test_a_row_without_stop_hits_the_token_limit(tok):
    """A row that never stops reports max_new_tokens and hit_token_limit."""
    rows = RowStops(tok, {1}, 1, (STOP,))
    rows.take([[5, 6, 7]])
    out = rows.results()[0]
    assert (rows.done(), out.stopped_by, out.hit_token_limit) == (False, "max_new_tokens", True)


def test_many_rows_at_once_equal_each_row_alone(tok):
    """take_rows over many one-row RowStops (one decode call) ends each row where its own
    RowStops would, for every block size: stop strings, EOS and rows that run on."""
    texts = [TEXT, "No stop here at all", "A\n\n### B", "x ### End y", "Apple pie.\n\n"]
    ids = [tok.encode(t, add_special_tokens=False) for t in texts]
    ids[1] = ids[1][:3] + [1] + ids[1][3:]  # an EOS inside the second row
    stops = (STOP, "### End")
    for size in (1, 2, 3, 8):
        alone = [RowStops(tok, {1}, 1, stops) for _ in ids]
        together = [RowStops(tok, {1}, 1, stops) for _ in ids]
        for k in range(0, max(len(x) for x in ids), size):
            for rs, row in zip(alone, ids):
                rs.take([row[k : k + size]])
            take_rows([(rs, 0) for rs in together], [row[k : k + size] for row in ids])
        assert [r.results() for r in together] == [r.results() for r in alone]
        assert {r.how[0] for r in together} == {"stop_string", "eos", None}


def test_decode_many_equals_decode(tok):
    """One backend call gives what tokenizer.decode gives row by row, specials kept."""
    rows = [tok.encode(TEXT, add_special_tokens=False), [0, 5, 6, 1, 3], [], [7]]
    assert decode_many(tok, rows) == [tok.decode(r, skip_special_tokens=False) for r in rows]
