"""The CUDA path of the llm library (run on the device; skipped without CUDA)."""

import pytest
import torch

from runner.llm.critic import scoring as critic
from runner.llm.decoding.generation import SamplingParams, generate
from runner.llm.loading import loader
from runner.llm.stage1.phases import generate_instructions

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture
def lm(tiny_model, fresh_loader):
    """The tiny model on CUDA in bfloat16 (dtype auto)."""
    return loader.load_model({"path": str(tiny_model), "device": "auto"})


def test_auto_places_bf16_on_cuda(lm):
    """device/dtype auto put the model on CUDA in bfloat16 where supported."""
    assert (lm.device.type, lm.dtype) == ("cuda", torch.bfloat16)


def test_cuda_sampling_is_deterministic(lm):
    """Per-row CUDA generators give the same rows for the same seed."""
    sp = SamplingParams(temperature=1.0, top_p=0.9, repetition_penalty=1.1, max_new_tokens=12)
    ids = lm.encode(["a", "bb cc", "### Instruction:\n"])
    assert generate(lm, ids, sp, seed=9) == generate(lm, ids, sp, seed=9)


def test_cuda_critic_scores(lm):
    """The critic scores a batch on CUDA in one forward pass."""
    labels = critic.label_token_ids(lm.tokenizer, [" A", " B"], "c")
    before = critic.forward_calls()
    scores = critic.score_prompts(lm, lm.encode(["x", "yy"]), labels)
    assert critic.forward_calls() - before == 1 and all(0.0 <= s.p_a <= 1.0 for s in scores)


def test_phase_marks_cuda(local_run, fresh_loader):
    """A phase that ran on CUDA tells the engine through ctx.mark_cuda()."""
    ctx = local_run.context("gen", {"count": 2, "fewshot": "fewshot.jsonl", "max_new_tokens": 4})
    generate_instructions(ctx)
    assert ctx.used_cuda
