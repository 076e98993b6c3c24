"""The prefill attention of `static_kv`: the kernel setting, and the mask it is given."""

from __future__ import annotations

import pytest
import torch

from runner.llm.decoding import static_kv


def _prefill_inputs(device: str, dtype: torch.dtype, rows: int = 3, width: int = 32,
                    heads: int = 8, kv_heads: int = 2, dim: int = 16) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(rows, heads, width, dim, generator=g).to(device, dtype)
    k = torch.randn(rows, kv_heads, width, dim, generator=g).to(device, dtype)
    v = torch.randn(rows, kv_heads, width, dim, generator=g).to(device, dtype)
    lengths = torch.tensor([width, width // 2, 5])[:rows]
    valid = torch.arange(width)[None, :] >= width - lengths[:, None]
    mask = static_kv.prefill_mask(valid.to(device), width, dtype)
    return q, k, v, mask


def _attend(kernel: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            mask: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    monkeypatch.setattr(static_kv, "PREFILL_KERNEL", kernel)
    out, _ = static_kv._attention(None, q, k, v, mask)
    return out


def test_prefill_kernel_setting_leaves_the_cpu_path_alone(monkeypatch):
    """On the CPU (float32) the kernel setting changes nothing: the same numbers either way."""
    q, k, v, mask = _prefill_inputs("cpu", torch.float32)
    efficient = _attend("efficient", q, k, v, mask, monkeypatch)
    auto = _attend("auto", q, k, v, mask, monkeypatch)
    assert torch.equal(efficient, auto)


def test_prefill_attention_matches_the_reference_on_real_positions(monkeypatch):
    """Each real (unpadded) query position gets softmax(qk/sqrt(d)) v over the real keys up to
    it, GQA's KV heads shared by their query heads; padded rows' positions are never read."""
    q, k, v, mask = _prefill_inputs("cpu", torch.float32)
    out = _attend("efficient", q, k, v, mask, monkeypatch)  # (rows, width, heads, dim)
    _, heads, width, dim = q.shape
    group = heads // k.shape[1]
    for row, length in enumerate((width, width // 2, 5)):
        first = width - length
        for head in range(heads):
            keys = k[row, head // group, first:]
            values = v[row, head // group, first:]
            scores = q[row, head, first:] @ keys.T / dim**0.5
            causal = torch.ones(length, length, dtype=torch.bool).tril()
            want = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1) @ values
            torch.testing.assert_close(out[row, first:, head], want, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_prefill_kernels_agree_in_bf16(monkeypatch):
    """The memory-efficient kernel (as shipped) and PyTorch's pick (cuDNN) give the same
    attention at every position, to bf16's precision."""
    q, k, v, mask = _prefill_inputs("cuda", torch.bfloat16, heads=32, kv_heads=8, dim=64)
    efficient = _attend("efficient", q, k, v, mask, monkeypatch).float()
    auto = _attend("auto", q, k, v, mask, monkeypatch).float()
    torch.testing.assert_close(efficient, auto, atol=2e-2, rtol=2e-2)
