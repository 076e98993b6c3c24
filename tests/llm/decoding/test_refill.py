"""Continuous refill (static engine, run eagerly on CPU): outputs independent of the slots."""

import pytest
import torch
from structlog.testing import capture_logs

from runner.llm.decoding import fastgen, refill
from runner.llm.decoding.generation import SamplingParams, generate, stream
from runner.llm.loading import loader

SAMPLED = SamplingParams(temperature=1.0, top_p=0.9, repetition_penalty=1.2, max_new_tokens=24)
TEXTS = ["### Instruction:\nWrite", "Below are examples of tasks.\n\n### Instruction:\n", "x",
         "Name three", "The sea is", "1, 2, 3,", "A poem:", "Q: why?\nA:"]


@pytest.fixture
def lm(tiny_model, fresh_loader):
    """The tiny model, loaded (and no runner kept from another model)."""
    fastgen.clear_runners()
    return loader.load_model({"path": str(tiny_model)})


def work_list(lm, sizes, seed0=11):
    """Items of `sizes` rows drawn from TEXTS, each with its own seed."""
    ids = lm.encode(TEXTS)
    out, k = [], 0
    for n, size in enumerate(sizes):
        out.append((n, [ids[(k + i) % len(ids)] for i in range(size)], seed0 + n))
        k += size
    return out


def one_row_at_a_time(lm, work, sp):
    """Each row alone through the lockstep static engine, keyed as row i of its item."""
    result = {}
    for tag, rows, seed in work:
        gens = []
        for i, row in enumerate(rows):
            gens.append(fastgen.generate_static(lm, [row], [i], sp, seed, nucleus="topk"))
        result[tag] = [g[0] for g in gens]
    return result


def refilled(lm, work, sp, slots, **kw):
    return dict(refill.stream_refill(lm, work, sp, slots, **kw))


def test_refill_equals_one_row_at_a_time_with_sampling(lm):
    """T>0, top_p<1, repetition penalty: refill through 3 slots equals rows run alone."""
    work = work_list(lm, [3, 5, 2])
    assert refilled(lm, work, SAMPLED, 3) == one_row_at_a_time(lm, work, SAMPLED)


def test_refill_equals_one_row_at_a_time_with_stops(lm):
    """Stop strings and EOS end rows at different steps; each row still equals its solo run."""
    probe = generate(lm, lm.encode(["x"]), SamplingParams(temperature=0, max_new_tokens=30), 0)
    stop = lm.tokenizer.decode(list(probe[0].token_ids[5:7]))
    sp = SamplingParams(temperature=1.3, top_p=0.95, repetition_penalty=1.1, max_new_tokens=30,
                        stop_strings=(stop, "\n"))
    work = work_list(lm, [4, 4, 4], seed0=3)
    # An EOS the tiny model samples often: the commonest token of the rows' 6th-10th tokens.
    free = [t for _, gs in refill.stream_refill(lm, work, SAMPLED, 4) for g in gs
            for t in g.token_ids[5:10]]
    common = max(set(free), key=free.count)
    lm.model.generation_config.eos_token_id = [lm.tokenizer.eos_token_id, common]
    got = refilled(lm, work, sp, 2)
    assert got == one_row_at_a_time(lm, work, sp)
    stopped = {g.stopped_by for gens in got.values() for g in gens}
    assert {"eos", "stop_string"} <= stopped


def test_refill_output_does_not_depend_on_slot_count(lm):
    """One, two or five slots give the same generations (greedy and sampled)."""
    work = work_list(lm, [2, 4, 3])
    for sp in (SAMPLED, SamplingParams(temperature=0, max_new_tokens=12)):
        runs = [refilled(lm, work, sp, n) for n in (1, 2, 5)]
        assert runs[0] == runs[1] == runs[2]


def test_refill_equals_lockstep_engine_batch(lm):
    """Each item equals what `generate(engine="static")` gives for that batch at once."""
    work = work_list(lm, [3, 3])
    got = refilled(lm, work, SAMPLED, 2)
    for tag, rows, seed in work:
        assert got[tag] == generate(lm, rows, SAMPLED, seed, engine="static")


def test_items_come_back_in_order_once_complete(lm):
    """Items are yielded in order, each with one Generation a row, empty items included."""
    work = work_list(lm, [2, 0, 5, 1])
    tags = [tag for tag, gens in refill.stream_refill(lm, iter(work), SAMPLED, 3)]
    assert tags == [0, 1, 2, 3]


def test_items_are_pulled_lazily(lm):
    """The engine asks for the next item only when slots need rows."""
    pulled = []

    def lazy():
        for item in work_list(lm, [2, 2, 2, 2]):
            pulled.append(item[0])
            yield item

    gen = refill.stream_refill(lm, lazy(), SAMPLED, 2)
    first = next(gen)
    assert first[0] == 0 and len(pulled) < 4
    gen.close()


def test_max_new_tokens_caps_each_row(lm):
    """Rows that never stop end at max_new_tokens, also when it is not a multiple of the block."""
    sp = SamplingParams(temperature=0.7, max_new_tokens=11)
    lm.model.generation_config.eos_token_id = None
    gens = [g for _, gs in refill.stream_refill(lm, work_list(lm, [3]), sp, 2) for g in gs]
    assert all(g.tokens <= 11 for g in gens)
    assert any(g.stopped_by == "max_new_tokens" and g.tokens == 11 for g in gens)


def test_one_new_token(lm):
    """max_new_tokens=1: token 0 comes from the prefill, no decode step runs."""
    sp = SamplingParams(temperature=0, max_new_tokens=1)
    work = work_list(lm, [3])
    got = refilled(lm, work, sp, 2)
    assert got[0] == generate(lm, work[0][1], sp, work[0][2], engine="simple")


def test_longer_prompt_widens_the_runner(lm):
    """A prompt longer than the runner's width waits for the slots to drain, then runs."""
    short = lm.encode(["x"])[0]
    long = lm.encode(["word " * 60])[0]
    assert len(long) > refill.PAD_TO
    work = [(0, [short, short], 1), (1, [long], 2)]
    got = refilled(lm, work, SAMPLED, 2)
    assert got == one_row_at_a_time(lm, work, SAMPLED)


def test_out_of_memory_halves_the_slots(lm, monkeypatch):
    """An OOM in a round halves the slots, restarts the rows in flight: the same output."""
    work = work_list(lm, [3, 3])
    expected = refilled(lm, work, SAMPLED, 4)
    fastgen.clear_runners()
    real = refill.SlotRunner.run_block
    calls = {"n": 0}

    def flaky(self, n, log):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return real(self, n, log)

    monkeypatch.setattr(refill.SlotRunner, "run_block", flaky)
    with capture_logs() as logs:
        got = refilled(lm, work, SAMPLED, 4)
    assert got == expected
    assert [e["into"] for e in logs if e["event"] == "oom_split"] == [[2, 2]]


def test_out_of_memory_at_one_slot_raises(lm, monkeypatch):
    """With one slot left there is nothing to split: the OOM propagates."""
    def oom(self, n, log):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")

    monkeypatch.setattr(refill.SlotRunner, "run_block", oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        refilled(lm, work_list(lm, [2]), SAMPLED, 1)


def test_stream_simple_engine_gives_generate_per_item(lm):
    """`stream` with the simple loop yields `generate` of each item, in order."""
    work = work_list(lm, [2, 3])
    got = list(stream(lm, work, SAMPLED, 4, engine="simple"))
    assert got == [(tag, generate(lm, rows, SAMPLED, seed, engine="simple"))
                   for tag, rows, seed in work]


def test_zero_slots_refused(lm):
    """slots < 1 is a caller's mistake, said plainly."""
    with pytest.raises(ValueError, match="slots"):
        list(refill.stream_refill(lm, [], SAMPLED, 0))


def test_shared_prompts_prefill_once(lm, monkeypatch):
    """Rows with one prompt (shots drawn per batch) prefill it once; rows equal solo runs."""
    ids = lm.encode(TEXTS[:2])
    work = [(0, [ids[0]] * 5, 4), (1, [ids[1]] * 3 + [ids[0]], 5)]
    prefilled = []
    real = refill.SlotRunner._prefill

    def counting(self, slots, rows, mask):
        prefilled.append(len(slots))
        return real(self, slots, rows, mask)

    monkeypatch.setattr(refill.SlotRunner, "_prefill", counting)
    got = refilled(lm, work, SAMPLED, 3)
    assert sum(prefilled) == 2  # each distinct prompt once, though slots were refilled
    monkeypatch.undo()
    assert got == one_row_at_a_time(lm, work, SAMPLED)
