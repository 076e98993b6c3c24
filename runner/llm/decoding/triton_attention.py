"""Decode attention (one query token a row) over the static KV cache, as one Triton kernel.

Why: at batch 256 the decode step's attention went through cuDNN's flash kernel, which is
built for long query blocks: ~1.9 ms a step for a cache of ~2.7 GB, about half the
bandwidth the card has (`bench/RESULTS.md`, profile). A decode query is one token, so the
work is a bandwidth-bound read of K and V, and what matters is reading each KV head once and
only the slots that count.

A program takes one (row, KV head): the GROUP query heads that share the KV head (GQA) form
the rows of a small query tile, padded to 16 for the tensor cores, and it walks the cache in
blocks of 64 slots with the usual online softmax (running max, running sum, rescaled
accumulator) in float32. The additive mask (0 for a slot that counts, a very negative
number for padding and for slots not yet written) is added to the scores, and K and V are
loaded only for slots that count, so padding and future slots cost no memory traffic.

Numerics: scores and softmax in float32, P rounded to the model dtype for the P·V product
(as flash kernels do); the result matches SDPA to the model dtype's rounding, not bit for
bit. It is used only for bf16/fp16 models on CUDA with enough (row, head) pairs to fill the
GPU; float32 models keep SDPA, whose result the equality checks against `model.generate`
rely on.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from runner.llm.decoding import triton_support

try:  # as in triton_sampling: the kernel's source needs `tl` as a global
    import triton.language as tl
except ImportError:  # pragma: no cover
    tl = None

__all__ = ["MIN_PROGRAMS", "decode_attention", "usable"]

MIN_PROGRAMS = 256  # (row, KV head) pairs below which SDPA is as fast: too few programs
_BLOCK_N = 64
_KERNELS: list[Any] = []


def usable(query: torch.Tensor, key: torch.Tensor) -> bool:
    """True when the kernel applies: CUDA, half precision, one query token, enough programs,
    and the kernels run there (`triton_support.available`)."""
    return (tl is not None and query.is_cuda and query.dtype in (torch.bfloat16, torch.float16)
            and query.shape[2] == 1 and query.shape[0] * key.shape[1] >= MIN_PROGRAMS
            and query.shape[-1] in (64, 128, 256) and triton_support.available(query.device))


# The cache length is a runtime argument of the kernel built for the GPU (`_decode_source`):
# one build serves every prompt width and max_new_tokens, so it can be built before the
# prompts are known (`kernel_prebuild`); as a constexpr it cost a build per batch shape.
# Triton's interpreter (the CPU tests) cannot loop to a runtime bound, so it runs
# `_decode_static_source`, which passes the length as a constexpr to the same body.
_decode_body: Any = None  # triton.jit(_decode_body_source), set by `_kernel`


def _decode_source(q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, scale, masked_below,  # type: ignore[no-untyped-def]
                   q_row, q_head, kv_row, kv_head, kv_slot, mask_row, out_row, out_head, length,
                   KV_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr,
                   HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr):
    _decode_body(q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, scale, masked_below, q_row, q_head,
                 kv_row, kv_head, kv_slot, mask_row, out_row, out_head, length, KV_HEADS, GROUP,
                 GROUP_PAD, HEAD_DIM, BLOCK_N)


def _decode_static_source(q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, scale, masked_below,  # type: ignore[no-untyped-def]
                          q_row, q_head, kv_row, kv_head, kv_slot, mask_row, out_row, out_head,
                          LENGTH: tl.constexpr, KV_HEADS: tl.constexpr, GROUP: tl.constexpr,
                          GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                          BLOCK_N: tl.constexpr):
    _decode_body(q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, scale, masked_below, q_row, q_head,
                 kv_row, kv_head, kv_slot, mask_row, out_row, out_head, LENGTH, KV_HEADS, GROUP,
                 GROUP_PAD, HEAD_DIM, BLOCK_N)


def _decode_body_source(q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, scale, masked_below,  # type: ignore[no-untyped-def]
                        q_row, q_head, kv_row, kv_head, kv_slot, mask_row, out_row, out_head,
                        length, KV_HEADS: tl.constexpr, GROUP: tl.constexpr,
                        GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr):
    pid = tl.program_id(0)
    b = (pid // KV_HEADS).to(tl.int64)
    h = (pid % KV_HEADS).to(tl.int64)
    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, HEAD_DIM)
    heads = h * GROUP + g
    real = g < GROUP
    q = tl.load(q_ptr + b * q_row + heads[:, None] * q_head + d[None, :], mask=real[:, None],
                other=0.0)
    k_base = k_ptr + b * kv_row + h * kv_head
    v_base = v_ptr + b * kv_row + h * kv_head
    run_max = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    run_sum = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    for start in range(0, length, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        inside = n < length
        bias = tl.load(mask_ptr + b * mask_row + n, mask=inside, other=float("-inf"))
        bias = bias.to(tl.float32)
        counts = bias > masked_below  # a masked slot carries the dtype's most negative value
        k = tl.load(k_base + n[:, None] * kv_slot + d[None, :], mask=counts[:, None], other=0.0)
        scores = tl.dot(q, tl.trans(k)) * scale + bias[None, :]
        new_max = tl.maximum(run_max, tl.max(scores, axis=1))
        alpha = tl.exp(run_max - new_max)
        p = tl.exp(scores - new_max[:, None])
        run_sum = run_sum * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + n[:, None] * kv_slot + d[None, :], mask=counts[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        run_max = new_max
    out = acc / run_sum[:, None]
    tl.store(out_ptr + b * out_row + heads[:, None] * out_head + d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=real[:, None])


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _kernel() -> Any:
    if not _KERNELS:  # see triton_sampling._kernel: built on first use, interpreter on CPU
        import triton  # noqa: PLC0415 - Triton is optional: only CUDA builds of the kernel need it

        global _decode_body
        _decode_body = triton.jit(_decode_body_source)
        _KERNELS.append(triton.jit(_decode_static_source if _interpreted() else _decode_source))
    return _KERNELS[0]


def decode_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     mask: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q·Kᵀ·scale + mask)·V for one query token: query (batch, heads, 1, dim), key and
    value (batch, kv_heads, length, dim) with unit stride on dim and equal strides, mask
    additive (batch, 1, 1, length). Returns (batch, 1, heads, dim), contiguous."""
    b, hq, _, d = query.shape
    hkv, length = key.shape[1], key.shape[2]
    if key.stride() != value.stride() or key.stride(3) != 1 or query.stride(3) != 1:
        raise ValueError("decode_attention wants K and V of one layout, unit stride on dim")
    mask = mask.reshape(b, -1)
    if mask.shape[1] != length or mask.stride(1) != 1:
        raise ValueError(f"decode_attention wants a (batch, {length}) mask, got {tuple(mask.shape)}")
    group = hq // hkv
    out = torch.empty(b, 1, hq, d, dtype=query.dtype, device=query.device)
    kernel = _kernel()
    # The GPU build takes the length as its 16th argument; the interpreter's as a constexpr.
    length_arg = {"LENGTH": length} if _interpreted() else {"length": length}
    kernel[(b * hkv,)](
        query, key, value, mask, out, float(scale), torch.finfo(mask.dtype).min / 2,
        query.stride(0), query.stride(1), key.stride(0), key.stride(1), key.stride(2),
        mask.stride(0), out.stride(0), out.stride(2), **length_arg,
        KV_HEADS=hkv, GROUP=group, GROUP_PAD=max(16, 1 << (group - 1).bit_length()),
        HEAD_DIM=d, BLOCK_N=_BLOCK_N, num_warps=4,
    )
    return out
