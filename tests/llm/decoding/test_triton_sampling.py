"""The Triton nucleus kernel against the torch `bisect` draw (interpreter on CPU, CUDA on GPU)."""

import pytest
import torch

from runner.llm.decoding import triton_sampling
from runner.llm.decoding.sampling import Sampler, nucleus_threshold, row_keys
from runner.llm.decoding.triton_sampling import nucleus_draw, passes

pytest.importorskip("triton")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
VOCAB = 2503  # three chunks of 1,024 (below), the last one partly masked


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 1,024 entries, so a small vocabulary still spans several chunks."""
    monkeypatch.setattr(triton_sampling, "CHUNK", 1024)


def _case(rows: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, VOCAB, generator=gen) * scale).to(DEVICE)
    # 63-bit seeds, so both 32-bit halves of a key feed the in-kernel hash.
    keys = row_keys([(seed * 0x9E3779B97F4A7C15 + r) % (1 << 63) for r in range(rows)], DEVICE)
    return logits, keys, torch.tensor([5], device=DEVICE)


def _torch_bisect(logits, keys, step, temperature, top_p):
    sampler = Sampler(temperature, top_p, 1.0, nucleus="bisect", fused=False)
    return sampler.pick(logits.clone(), None, keys, step, "bisect")[0]


def test_kernel_draws_the_torch_bisect_token():
    """On peaked logits every row draws the token the torch search and draw give."""
    logits, keys, step = _case(12, 3.0, 1)
    ours = nucleus_draw(logits.clone(), keys, step, 0.7, 0.9)
    assert ours.tolist() == _torch_bisect(logits, keys, step, 0.7, 0.9).tolist()


def test_kernel_token_is_in_the_nucleus_on_flat_logits():
    """On nearly flat logits (a nucleus of thousands) each token is in the torch nucleus."""
    logits, keys, step = _case(12, 0.5, 2)
    ours = nucleus_draw(logits.clone(), keys, step, 1.0, 0.9)
    probs = logits.softmax(dim=-1)
    threshold = nucleus_threshold(probs, 0.9)
    # A boundary token within float rounding of the threshold may fall on either side.
    kept = probs >= threshold * (1 - 1e-5)
    assert kept.gather(1, ours[:, None]).all()
    assert (ours == _torch_bisect(logits, keys, step, 1.0, 0.9)).sum() >= 10


def test_tiny_top_p_keeps_only_the_most_likely_token():
    """A top_p below every probability keeps the argmax alone, whatever the uniform."""
    logits, keys, step = _case(6, 2.0, 3)
    ours = nucleus_draw(logits.clone(), keys, step, 0.7, 1e-7)
    assert ours.tolist() == logits.argmax(dim=-1).tolist()


def test_top_p_near_one_searches_from_zero():
    """Above 1 - 1e-5 the search starts at 0 and still draws the torch search's tokens."""
    logits, keys, step = _case(6, 3.0, 5)
    ours = nucleus_draw(logits.clone(), keys, step, 1.0, 0.999999)
    assert ours.tolist() == _torch_bisect(logits, keys, step, 1.0, 0.999999).tolist()


def test_seven_passes_for_a_llama3_vocabulary():
    """top_p 0.9 over 128,256 tokens: the first interval is under 16**7 floats wide."""
    assert passes(0.9, 128256) == 7 and passes(0.999999, 128256) == 8


def test_float16_logits_are_refused():
    """The kernel reads float32 rows only; anything else is a ValueError, not garbage."""
    logits, keys, step = _case(2, 1.0, 4)
    with pytest.raises(ValueError, match="float32"):
        nucleus_draw(logits.half(), keys, step, 0.7, 0.9)


def test_kernel_takes_one_step_per_row():
    """Per-row steps (the refill engine's slots) draw what each row draws at its own step."""
    logits, keys, _ = _case(6, 3.0, 4)
    steps = torch.tensor([0, 3, 3, 7, 1, 12], device=DEVICE)
    ours = nucleus_draw(logits.clone(), keys, steps, 0.7, 0.9)
    alone = [nucleus_draw(logits[i : i + 1].clone(), keys[i : i + 1], steps[i : i + 1], 0.7, 0.9)
             for i in range(6)]
    assert ours.tolist() == [int(a) for a in alone]
    assert ours.tolist() == _torch_bisect(logits, keys, steps, 0.7, 0.9).tolist()
