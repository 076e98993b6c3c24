"""The Triton decode-attention kernel against SDPA (interpreter on CPU, CUDA on GPU)."""

import pytest
import torch
import torch.nn.functional as F

from runner.llm.decoding.triton_attention import MIN_PROGRAMS, decode_attention, usable

pytest.importorskip("triton")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# Triton's interpreter multiplies bf16 as integers; fp16 exercises the same code on CPU.
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float16
TOLERANCE = 2e-2 if DTYPE == torch.bfloat16 else 2e-3


def _inputs(allowed: torch.Tensor, heads: int = 8, kv_heads: int = 2, dim: int = 64):
    gen = torch.Generator().manual_seed(0)
    batch, length = allowed.shape
    # Query as transformers makes it: (batch, 1, heads, dim) viewed as (batch, heads, 1, dim).
    q = torch.randn(batch, 1, heads, dim, generator=gen).transpose(1, 2)
    k = torch.randn(batch, kv_heads, length, dim, generator=gen)
    v = torch.randn(batch, kv_heads, length, dim, generator=gen)
    mask = torch.where(allowed, 0.0, torch.finfo(DTYPE).min)[:, None, None, :]
    return [t.to(DEVICE, DTYPE) for t in (q, k, v, mask)]


def _sdpa(q, k, v, mask):
    b, h, _, d = q.shape
    g = h // k.shape[1]
    out = F.scaled_dot_product_attention(q.float().reshape(b, k.shape[1], g, d), k.float(),
                                         v.float(), attn_mask=mask.float(), scale=d**-0.5)
    return out.reshape(b, h, 1, d).transpose(1, 2)


def test_matches_sdpa_with_left_padding_and_unwritten_slots():
    """Padding before the prompt and slots after the current one are ignored as SDPA does."""
    allowed = torch.zeros(3, 150, dtype=torch.bool)
    allowed[0, :100] = True  # no padding, slots 100.. not written yet
    allowed[1, 70:121] = True  # left padding past a whole 64-slot block
    allowed[2, 140] = True  # only the current slot
    q, k, v, mask = _inputs(allowed)
    out = decode_attention(q, k, v, mask, q.shape[-1] ** -0.5)
    assert out.shape == (3, 1, 8, 64) and out.is_contiguous()
    assert (out.float() - _sdpa(q, k, v, mask)).abs().max() < TOLERANCE


def test_masked_slots_do_not_leak_even_when_their_values_are_huge():
    """K and V of masked slots are never read: filling them with 1e4 changes nothing."""
    allowed = torch.zeros(2, 130, dtype=torch.bool)
    allowed[:, 80:100] = True
    q, k, v, mask = _inputs(allowed)
    clean = decode_attention(q, k, v, mask, 0.125)
    k[:, :, ~allowed[0]] = 1e4
    v[:, :, ~allowed[0]] = 1e4
    assert torch.equal(decode_attention(q, k, v, mask, 0.125), clean)


def test_usable_only_for_half_precision_cuda_batches():
    """float32 queries, CPU tensors and small batches keep SDPA."""
    key = torch.zeros(MIN_PROGRAMS, 1, 8, 64)
    assert not usable(torch.zeros(MIN_PROGRAMS, 4, 1, 64, dtype=torch.float32), key)
    assert not usable(torch.zeros(MIN_PROGRAMS, 4, 1, 64, dtype=torch.bfloat16), key)
    if DEVICE.type == "cuda":
        big = torch.zeros(MIN_PROGRAMS, 4, 1, 64, dtype=torch.bfloat16, device=DEVICE)
        assert usable(big, key.to(DEVICE)) and not usable(big[:1], key[:1].to(DEVICE))
