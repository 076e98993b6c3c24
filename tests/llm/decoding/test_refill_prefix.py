"""Shared-prefix prefill in the refill engine (CPU, float32): the same rows as prefilling
every prompt whole, with the prefix prefilled once."""

import pytest
import torch

from runner.llm.decoding import fastgen, refill
from runner.llm.decoding.generation import SamplingParams
from runner.llm.decoding.refill import _common_prefix, _Row
from runner.llm.decoding.slot_runner import SlotRunner
from runner.llm.loading import loader

SAMPLED = SamplingParams(temperature=1.0, top_p=0.9, repetition_penalty=1.2, max_new_tokens=20)
GREEDY = SamplingParams(temperature=0, max_new_tokens=20)
BLOCK = ("Below are examples of tasks that people ask a helpful assistant to do.\n\n"
         "### Instruction:\nName a colour.\n### Response:\nBlue.\n### End\n\n"
         "### Instruction:\n")
ENDINGS = ["Write a poem.\n### Response:\n", "Add 2 and 3.\n### Response:\n",
           "x\n### Response:\n", "Tell me a long story about the sea and a boat.\n### Response:\n",
           "Why?\n### Response:\n"]


@pytest.fixture
def lm(tiny_model, fresh_loader):
    """The tiny model, loaded (and no runner kept from another model)."""
    fastgen.clear_runners()
    return loader.load_model({"path": str(tiny_model)})


def work_list(lm):
    """Two items whose rows share the few-shot block and differ in their last instruction;
    the second also repeats a prompt (copied, not prefilled) and has one of another block."""
    ids = lm.encode([BLOCK + e for e in ENDINGS] + ["The sea is"])
    return [(0, ids[:4], 7), (1, [ids[4], ids[0], ids[4], ids[5]], 8)]


def run(lm, work, sp, slots, prefix_min):
    fastgen.clear_runners()
    return dict(refill.stream_refill(lm, work, sp, slots, prefix_min=prefix_min))


@pytest.fixture
def shared_calls(monkeypatch):
    """The prefixes `_prefill_shared` was called with (the real call runs)."""
    calls = []
    real = SlotRunner._prefill_shared

    def counting(self, slots, ids, mask, prefix):
        calls.append((len(slots), len(prefix)))
        return real(self, slots, ids, mask, prefix)

    monkeypatch.setattr(SlotRunner, "_prefill_shared", counting)
    return calls


@pytest.mark.parametrize("sp", [SAMPLED, GREEDY], ids=["sampled", "greedy"])
def test_shared_prefix_gives_the_rows_of_whole_prefills(lm, sp, shared_calls):
    """Sampled and greedy: prefix prefilled once, every row equal to the whole-prompt path."""
    work = work_list(lm)
    whole = run(lm, work, sp, 4, 0)
    assert shared_calls == []
    shared = run(lm, work, sp, 4, 8)
    assert shared_calls and all(n > 1 and p >= 8 for n, p in shared_calls)
    assert shared == whole


def test_shared_prefix_with_refills_and_one_slot_each_round(lm, shared_calls):
    """Two slots refilled as rows stop: prefixes shared where a round admits several rows,
    and the output still equals the whole-prompt path and a run on five slots."""
    work = work_list(lm)
    whole = run(lm, work, SAMPLED, 2, 0)
    assert run(lm, work, SAMPLED, 2, 8) == whole
    assert run(lm, work, SAMPLED, 5, 8) == whole


def test_common_prefix_leaves_every_row_a_suffix():
    """The prefix is the shared leading tokens, cut one short of the shortest prompt."""
    rows = [_Row(0, i, ids, 1) for i, ids in enumerate([(1, 2, 3, 4), (1, 2, 3, 5, 6), (1, 2, 3)])]
    assert _common_prefix(rows, 1) == (1, 2)
    assert _common_prefix(rows[:2], 1) == (1, 2, 3)
    assert _common_prefix(rows[:2], 4) == ()  # shorter than asked
    assert _common_prefix([rows[0], rows[0]], 1) == ()  # one distinct prompt: copied instead
    assert _common_prefix(rows, 0) == ()  # switched off


def test_shared_prefix_cache_equals_whole_prefill(lm):
    """The slots' prompt KV and token-0 logits after a shared prefill equal a whole one."""
    prompts = lm.encode([BLOCK + e for e in ENDINGS[:3]])
    prefix = _common_prefix([_Row(0, i, tuple(x), 1) for i, x in enumerate(prompts)], 8)
    width = 64 * -(-max(len(x) for x in prompts) // 64)
    ids = torch.tensor([[3] * (width - len(x)) + x for x in prompts])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in prompts])
    from runner.llm.decoding.sampling import Sampler
    from runner.llm.decoding.static_kv import static_attention

    results = []
    for share in (False, True):
        runner = SlotRunner(lm.model, 3, width, 8, Sampler(0.0, 1.0, 1.0, 64, "topk", False),
                            "topk", False, False, 4)
        with torch.inference_mode(), static_attention(lm.model):
            if share:
                runner._prefill_shared([0, 1, 2], ids, mask, prefix)
            else:
                runner._prefill([0, 1, 2], ids, mask)
        valid = mask.bool()[:, None, :, None]
        results.append(([torch.where(valid, k[:, :, :width], 0) for k in runner.cache.keys],
                        runner.first_logits))
    (keys_a, logits_a), (keys_b, logits_b) = results
    for a, b in zip(keys_a, keys_b):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits_a, logits_b, rtol=1e-4, atol=1e-4)


def test_a_failing_shared_prefill_falls_back_to_whole_ones(lm, monkeypatch):
    """A shared prefill that raises is logged once and replaced by whole prefills: same rows."""
    from structlog.testing import capture_logs

    work = work_list(lm)
    whole = run(lm, work, SAMPLED, 4, 0)

    def broken(self, slots, ids, mask, prefix):
        self.cache.keys[0].fill_(7.0)  # half-written state, which the whole prefill overwrites
        raise RuntimeError("no kernel for this shape (test)")

    monkeypatch.setattr(SlotRunner, "_prefill_shared", broken)
    with capture_logs() as logs:
        got = run(lm, work, SAMPLED, 4, 8)
    assert got == whole
    assert [e["event"] for e in logs].count("shared_prefix_unavailable") == 1


def test_rows_of_two_items_in_one_round_share_each_items_prefix(lm, shared_calls):
    """One round admitting two items with different few-shot blocks prefills each block once
    (grouped by item, not the round's common prefix), and matches whole prefills."""
    other = BLOCK.replace("Name a colour.", "Count to three, slowly please.").replace(
        "Blue.", "One, two, three.")
    a = lm.encode([BLOCK + e for e in ENDINGS[:3]])
    b = lm.encode([other + e for e in ENDINGS[2:5]])
    work = [(0, a, 3), (1, b, 4)]
    whole = run(lm, work, SAMPLED, 6, 0)
    assert run(lm, work, SAMPLED, 6, 8) == whole
    assert sorted(n for n, _ in shared_calls) == [3, 3]
