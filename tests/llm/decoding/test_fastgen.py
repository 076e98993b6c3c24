"""The fast generation loop (static cache, device sampling), run eagerly on CPU."""

from typing import ClassVar

import pytest
import torch
from structlog.testing import capture_logs
from torch.overrides import TorchFunctionMode

from runner.llm.decoding import fastgen
from runner.llm.decoding.generation import ENGINE_ENV, SamplingParams, engine_for, generate
from runner.llm.decoding.static_kv import static_attention, supported
from runner.llm.loading import loader

PROMPTS = ["### Instruction:\nWrite", "Below are examples of tasks.\n\n### Instruction:\n", "x"]
SAMPLED = SamplingParams(temperature=1.0, top_p=0.9, repetition_penalty=1.2, max_new_tokens=24)


@pytest.fixture
def lm(tiny_model, fresh_loader):
    """The tiny model, loaded (and no runner kept from another model)."""
    fastgen.clear_runners()
    return loader.load_model({"path": str(tiny_model)})


def static(lm, ids, sp, seed, **kw):
    return fastgen.generate_static(lm, ids, list(range(len(ids))), sp, seed, **kw)


def test_static_greedy_matches_transformers_generate(lm):
    """Greedy static-cache decoding equals model.generate(do_sample=False) token for token."""
    ids = lm.encode(PROMPTS)
    ours = generate(lm, ids, SamplingParams(temperature=0, max_new_tokens=40), 0, engine="static")
    batch = lm.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    ref = lm.model.generate(**batch, do_sample=False, max_new_tokens=40,
                            pad_token_id=lm.tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    expected = [ref[i, width : width + g.tokens].tolist() for i, g in enumerate(ours)]
    assert [list(g.token_ids) for g in ours] == expected


def test_static_greedy_matches_simple_loop_with_stop_strings(lm):
    """Greedy with a stop string gives the simple loop's Generations (text, stop, counts)."""
    probe = generate(lm, lm.encode(["x"]), SamplingParams(temperature=0, max_new_tokens=30), 0)
    stop = lm.tokenizer.decode(list(probe[0].token_ids[18:20]))  # completes in the 2nd block
    sp = SamplingParams(temperature=0, max_new_tokens=30, stop_strings=(stop,))
    ids = lm.encode(PROMPTS)
    assert generate(lm, ids, sp, 0, engine="static") == generate(lm, ids, sp, 0, engine="simple")


def test_static_greedy_with_repetition_penalty_matches_simple_loop(lm):
    """The penalty over prompt and output ids gives the simple loop's greedy rows."""
    sp = SamplingParams(temperature=0, repetition_penalty=1.5, max_new_tokens=40)
    ids = lm.encode(PROMPTS)
    assert generate(lm, ids, sp, 0, engine="static") == generate(lm, ids, sp, 0, engine="simple")


def test_static_sampling_is_deterministic_for_a_seed(lm):
    """The same prompts and seed sample the same rows twice."""
    ids = lm.encode(PROMPTS)
    assert static(lm, ids, SAMPLED, 5) == static(lm, ids, SAMPLED, 5)


def test_static_sampling_differs_for_another_seed(lm):
    """Another batch seed draws other tokens."""
    ids = lm.encode(PROMPTS)
    assert static(lm, ids, SAMPLED, 5) != static(lm, ids, SAMPLED, 6)


def test_static_row_independent_of_the_rest_of_the_batch(lm):
    """A row samples the same tokens alone as in its batch (so an OOM split changes nothing)."""
    ids = lm.encode(PROMPTS)
    whole = static(lm, ids, SAMPLED, 3)
    alone = fastgen.generate_static(lm, [ids[2]], [2], SAMPLED, 3)
    assert alone[0] == whole[2]


def test_topk_miss_gives_the_full_sort_result(lm):
    """A mid-batch miss of the 32 candidates rewinds; the rows equal always sorting's."""
    ids = lm.encode(["x"])  # covered at the prefill, missed at step 5 (see the next test)
    vocab = lm.model.config.vocab_size
    assert static(lm, ids, SAMPLED, 7, candidates=32, nucleus="topk") == static(
        lm, ids, SAMPLED, 7, candidates=vocab, nucleus="topk")


def test_topk_miss_rewinds_mid_batch(lm):
    """That miss is found at a block's end and logged as a rewind to its step."""
    with capture_logs() as logs:
        static(lm, lm.encode(["x"]), SAMPLED, 7, candidates=32, nucleus="topk")
    assert [e.get("step") for e in logs if e["event"] == "fastgen_rewind"] == [5]


class HostReads(TorchFunctionMode):
    """Fails on any op that reads a tensor's value on the host or copies one to the device."""

    BANNED: ClassVar[set[str]] = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu",
              "numpy", "tensor"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.BANNED:
            raise AssertionError(f"host synchronisation in the decode step: {func.__name__}")
        return func(*args, **(kwargs or {}))


def test_decode_step_never_synchronises_with_the_host(lm):
    """The decode step (model, sampling, bookkeeping) runs with no host read: graph-safe."""
    ids = lm.encode(PROMPTS)
    runner = fastgen._runner(lm, len(ids), max(map(len, ids)), SAMPLED, False, 16)
    width = runner.width
    padded = torch.tensor([[0] * (width - len(r)) + r for r in ids])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids])
    with torch.inference_mode(), static_attention(lm.model):
        runner.load(padded, mask, torch.zeros(len(ids), 2, dtype=torch.long))
        with HostReads():
            for variant in ("bisect", "topk", "sort"):
                runner._body(variant)
    assert int(runner.step) == 4


def test_auto_engine_is_the_simple_loop_on_cpu(lm):
    """On CPU `auto` keeps the simple loop; the static one is for CUDA."""
    assert engine_for(lm) == "simple"


def test_environment_overrides_the_engine(lm, monkeypatch):
    """RUNNER_GENERATION=static selects the fast loop even on CPU."""
    monkeypatch.setenv(ENGINE_ENV, "static")
    assert engine_for(lm) == "static"


def test_llama_is_a_supported_family(lm):
    """The static cache reproduces a Llama's forward (the families it is used for)."""
    assert supported(lm.model)


def test_topk_is_the_default_nucleus_search_on_cpu(lm):
    """Without the Triton kernel's device, the default search is top-k."""
    assert fastgen.NUCLEUS is None
    assert fastgen._runner(lm, 2, 10, SamplingParams(max_new_tokens=4), False,
                           1024).sampler.nucleus == "topk"


def test_bisect_never_rewinds(lm):
    """The exact threshold search samples without misses, rewinds or sorts."""
    with capture_logs() as logs:
        out = static(lm, lm.encode(PROMPTS), SAMPLED, 7, candidates=32, nucleus="bisect")
    assert "fastgen_rewind" not in [e["event"] for e in logs]
    assert out == static(lm, lm.encode(PROMPTS), SAMPLED, 7, nucleus="bisect-eager")
