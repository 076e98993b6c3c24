"""Batched seeded sampling: determinism, greedy == transformers' generate, per-row stops."""

import pytest
import torch

from runner.llm.decoding.generation import SamplingParams, StopChecker, generate
from runner.llm.loading import loader

PROMPTS = ["### Instruction:\nWrite", "Below are examples of tasks.\n\n### Instruction:\n", "x"]


@pytest.fixture
def lm(tiny_model, fresh_loader):
    """The tiny model, loaded."""
    return loader.load_model({"path": str(tiny_model)})


def test_greedy_matches_transformers_generate(lm):
    """temperature 0 gives model.generate(do_sample=False) token for token, left-padded batch."""
    ids = lm.encode(PROMPTS)
    ours = generate(lm, ids, SamplingParams(temperature=0, max_new_tokens=12), seed=0)
    batch = lm.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    ref = lm.model.generate(**batch, do_sample=False, max_new_tokens=12,
                            pad_token_id=lm.tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    expected = [ref[i, width : width + g.tokens].tolist() for i, g in enumerate(ours)]
    assert [list(g.token_ids) for g in ours] == expected


def test_sampling_is_deterministic_for_a_seed(lm):
    """The same prompts and seed sample the same rows twice."""
    sp = SamplingParams(temperature=1.0, top_p=0.9, repetition_penalty=1.2, max_new_tokens=16)
    ids = lm.encode(PROMPTS)
    assert generate(lm, ids, sp, seed=5) == generate(lm, ids, sp, seed=5)


def test_sampling_differs_for_another_seed(lm):
    """Another batch seed draws other tokens."""
    sp = SamplingParams(temperature=1.0, max_new_tokens=16)
    ids = lm.encode(PROMPTS)
    assert generate(lm, ids, sp, seed=5) != generate(lm, ids, sp, seed=6)


def test_row_result_independent_of_chunking(lm):
    """A row samples the same tokens alone as in its batch (what an OOM split relies on)."""
    sp = SamplingParams(temperature=1.0, max_new_tokens=10)
    ids = lm.encode(PROMPTS)
    whole = generate(lm, ids, sp, seed=3)
    from runner.llm.decoding.generation import _generate_chunk

    assert _generate_chunk(lm, [ids[2]], [2], sp, 3)[0] == whole[2]


def test_token_limit_reported(lm):
    """A row that never stops reports max_new_tokens and hit_token_limit."""
    out = generate(lm, lm.encode(["x"]), SamplingParams(temperature=0, max_new_tokens=5), seed=0)[0]
    assert (out.stopped_by, out.hit_token_limit, out.tokens) == ("max_new_tokens", True, 5)


def test_stop_checker_fires_when_stop_string_completes(lm):
    """The tail check fires first at the token whose full decode first holds the stop string."""
    ids = lm.tokenizer.encode("Apple pie.\n\n### End", add_special_tokens=False)
    checker = StopChecker(lm.tokenizer, ("\n\n###",))
    first = min(n for n in range(1, len(ids) + 1) if "\n\n###" in lm.tokenizer.decode(ids[:n]))
    assert [checker.hit(ids[:n]) for n in range(1, len(ids) + 1)].index(True) + 1 == first


def test_rows_stop_at_stop_string(lm):
    """A row stops as soon as its text holds a stop string (stopped_by stop_string)."""
    greedy = SamplingParams(temperature=0, max_new_tokens=8)
    probe = generate(lm, lm.encode(["x"]), greedy, seed=0)[0]
    stop = lm.tokenizer.decode(list(probe.token_ids[2:4]))
    with_stop = SamplingParams(temperature=0, max_new_tokens=8, stop_strings=(stop,))
    out = generate(lm, lm.encode(["x"]), with_stop, seed=0)[0]
    assert out.stopped_by == "stop_string" and stop in out.text and out.tokens <= 4


def test_inference_leaves_grad_mode_alone(lm):
    """Generation runs without autograd and does not switch it off globally."""
    generate(lm, lm.encode(["x"]), SamplingParams(temperature=0, max_new_tokens=2), seed=0)
    assert torch.is_grad_enabled()


class TightMemory(torch.nn.Module):
    """A real model that runs out of (CUDA) memory on any batch of more than one row."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None,
                use_cache=None, logits_to_keep=0):
        if input_ids.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids, cache=cache, use_cache=use_cache,
                          logits_to_keep=logits_to_keep)


def test_oom_splits_the_chunk_and_goes_on(lm):
    """On out-of-memory the rows are retried in halves, logged as oom_split, same results."""
    from dataclasses import replace

    from structlog.testing import capture_logs

    sp = SamplingParams(temperature=1.0, max_new_tokens=6)
    ids = lm.encode(PROMPTS)
    small = replace(lm, model=TightMemory(lm.model))
    with capture_logs() as logs:
        split = generate(small, ids, sp, seed=4)
    whole = generate(lm, ids, sp, seed=4)
    assert [g.token_ids for g in split] == [g.token_ids for g in whole]
    assert [e["event"] for e in logs].count("oom_split") == 2  # 3 rows -> 1 + 2 -> 1 + 1 + 1
