"""How many decode steps a refill round runs: longer when rows rarely stop early."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from runner.llm.decoding import fastgen, refill
from runner.llm.decoding.basics import RowStops
from runner.llm.decoding.generation import SamplingParams
from runner.llm.loading import loader


@pytest.fixture
def lm(tiny_model, fresh_loader):
    """The tiny model, loaded (and no runner kept from another model)."""
    fastgen.clear_runners()
    return loader.load_model({"path": str(tiny_model)})


def test_no_early_stops_gives_the_longest_block():
    """Rows that never stop early: nothing is lost to a long block."""
    assert refill.block_for(0.0, 8, 64) == 64


def test_realistic_mix_gives_a_block_of_thirteen():
    """3% early stops a step (issue 15's mix) and a round's host work of 4 steps: 13 steps."""
    assert refill.block_for(0.03, 8, 64) == 13


def test_frequent_early_stops_keep_the_shortest_block():
    """Half the rows stopping each step: the shortest block."""
    assert refill.block_for(0.5, 8, 64) == 8


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_block_never_grows_with_the_early_stop_rate(a, b):
    """More early stops never make a longer block, and it stays within its bounds."""
    low, high = sorted((a, b))
    assert 8 <= refill.block_for(high, 8, 64) <= refill.block_for(low, 8, 64) <= 64


def test_block_ends_where_the_first_row_reaches_its_cap():
    """Rows 10 and 30 tokens from their cap: the round ends after 10 steps."""
    assert refill.steps_for([10, 30], 64, 8) == 10


def test_block_runs_at_least_the_shortest_block():
    """A row 2 steps from its cap does not shorten the round below the shortest block."""
    assert refill.steps_for([2, 30], 64, 8) == 8


def test_block_never_runs_past_the_last_row():
    """Rows that may take 47 more tokens: 47 steps, not 64."""
    assert refill.steps_for([47, 47], 64, 8) == 47


def test_fresh_rows_count_their_first_token(lm):
    """A fresh row of a 48-token cap holds token 0 already: 47 steps are left."""
    row = refill._Row(0, 0, (1,), 0, None, True)
    row.stops = type("Stops", (), {"out": [[]]})()
    assert refill._steps([row, None], 64, 48, 8) == 47


def test_rows_that_never_stop_early_take_fewer_rounds(lm):
    """No EOS, no stop string: one round of 8 steps, then the rest of the cap in one round."""
    lm.model.generation_config.eos_token_id = None
    sp = SamplingParams(temperature=0.7, max_new_tokens=30)
    prompts = lm.encode(["x", "The sea is", "A poem:"])
    with capture_logs() as logs:
        gens = [g for _, gs in refill.stream_refill(lm, [(0, prompts, 5)], sp, 3) for g in gs]
    assert [g.tokens for g in gens] == [30, 30, 30]
    timing = next(e for e in logs if e["event"] == "refill_timing")
    assert (timing["rounds"], timing["steps"]) == (2, 29)


def test_take_counts_rows_that_stop_before_their_cap(lm):
    """An EOS row counts as an early stop; a row that reaches its cap does not."""
    eos = lm.tokenizer.eos_token_id
    st = refill._State()
    st.items[0] = refill._Item("batch", [None, None], 2)
    occupant = [refill._Row(0, place, (1,), 0, RowStops(lm.tokenizer, {eos}, 1, ())) for place in (0, 1)]
    seen = refill.Seen()
    # Per slot: row 0 of the block (token 0 of fresh rows: none here), then 4 steps.
    finished = refill._take([[0, 5, 6, eos, 7], [0, 5, 6, 7, 8]], occupant, st, 4, seen)
    assert [g.stopped_by for g in finished] == ["eos", "max_new_tokens"]
    assert (seen.rounds, seen.early, seen.row_steps) == (1, 1, 6)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(slots=st.integers(1, 4), block=st.integers(1, 6), longest=st.integers(1, 24),
       sizes=st.lists(st.integers(0, 3), min_size=1, max_size=3), max_new=st.integers(1, 20))
def test_rounds_never_change_what_a_row_generates(lm, slots, block, longest, sizes, max_new):
    """Any slots, first block and longest block: each row equals the one-step-round run of it."""
    probe = [t for _, gs in refill.stream_refill(lm, _work(lm, [3]), _SAMPLED, 1) for g in gs
             for t in g.token_ids[2:6]]
    # An EOS the tiny model samples often, so that rows stop early at different steps.
    lm.model.generation_config.eos_token_id = [lm.tokenizer.eos_token_id,
                                               max(set(probe), key=probe.count)]
    sp = SamplingParams(temperature=1.0, top_p=0.9, repetition_penalty=1.2, max_new_tokens=max_new)
    work = _work(lm, sizes)
    serial = dict(refill.stream_refill(lm, work, sp, 1, block=1, longest=1))
    got = dict(refill.stream_refill(lm, work, sp, slots, block=block, longest=longest))
    assert got == serial


_SAMPLED = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=8)
_TEXTS = ["### Instruction:\nWrite", "x", "Name three", "The sea is", "A poem:"]


def _work(lm, sizes):
    ids = lm.encode(_TEXTS)
    return [(n, [ids[(n + i) % len(ids)] for i in range(size)], 7 + n)
            for n, size in enumerate(sizes)]
