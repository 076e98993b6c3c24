"""A preallocated KV cache, the attention that reads it, and the model call around them.

Why our own cache and not transformers' `StaticCache`: its bookkeeping (a length counter per
layer, `cache_position` in older releases) has changed between 5.x releases, and the fast
loop must be able to rewind to an earlier step. Here the write position is one tensor we own
(`slots`); the model only ever calls `cache.update(k, v, layer_idx, ...)` on it, in 5.17 and
5.24 alike. Mask creation is skipped because we pass a ready 4D additive mask, which both
releases return as-is (`_preprocess_mask_arguments`), so none of transformers' per-step mask
machinery runs.

Why our own attention function: with a mask, transformers 5.17's `sdpa` path repeats K and V
for every query head of a GQA group (`repeat_kv`), which at batch 256 copies the whole cache
four times per layer per step. For a single query token we fold the group's heads into the
query-length axis instead (as 5.24's `pack_gqa` does), so SDPA reads each KV head once. It
is registered under its own name and switched on only around our calls (`static_attention`).
For bf16/fp16 on CUDA at a large batch, a decode step's attention is our Triton kernel
(`triton_attention`), which also skips the masked slots of the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from runner.llm.decoding import triton_attention
from runner.llm.decoding.basics import forward_params

__all__ = ["ATTENTION_NAME", "FAMILIES", "PREFILL_KERNEL", "StaticKV", "decode_mask",
           "model_step", "prefill_mask", "static_attention", "supported"]

ATTENTION_NAME = "runner_static_sdpa"
# Decoder-only families whose every layer is full attention over a plain KV cache and whose
# logits are `lm_head(norm(h))`: what this cache and mask reproduce exactly.
FAMILIES = {"llama", "mistral", "qwen2", "qwen3"}
# The prefill's attention kernel for bf16/fp16 on CUDA: "efficient" (the memory-efficient
# kernel, GQA's KV heads repeated for it) or "auto" (PyTorch's pick with a mask: cuDNN, which
# reads the shared KV heads as they are). Each admission of the refill engine prefills a row
# count the process has mostly not run before, and cuDNN builds a plan for every new shape:
# 58 ms on the H200 against 0.2 ms for the memory-efficient kernel, which then runs 0.7 ms a
# layer where cuDNN runs 0.2 (bench/probe_prefill_shapes.py). In the phase, generate_responses
# at 4,000 examples ran 1.12x faster with it (bench/RESULTS_issue15.md 2f).
PREFILL_KERNEL = "efficient"


def supported(model: Any) -> bool:
    """True when the fast loop reproduces this model's forward exactly."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in FAMILIES:
        return False
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    if any(t != "full_attention" for t in layer_types):
        return False
    windowed = config.model_type == "mistral" or getattr(config, "use_sliding_window", False)
    if windowed and getattr(config, "sliding_window", None):
        return False  # a sliding window would need a masked ring cache
    params = forward_params(type(model))
    return "logits_to_keep" in params and bool({"cache", "past_key_values"} & set(params))


class StaticKV:
    """Keys and values of every layer, (batch, kv_heads, length, head_dim), written at `slots`."""

    def __init__(self, model: Any, batch: int, length: int) -> None:
        c = model.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        p = next(model.parameters())
        shape = (batch, c.num_key_value_heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=p.dtype, device=p.device)
                     for _ in range(c.num_hidden_layers)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.slots = torch.zeros(1, dtype=torch.long, device=p.device)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new keys/values at `slots`; return the whole (masked) cache of the layer."""
        self.keys[layer_idx].index_copy_(2, self.slots, key_states)
        self.values[layer_idx].index_copy_(2, self.slots, value_states)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        # Only read when position ids are not given; we always give them.
        return 0


def _attention(
    module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    b, hq, q, d = query.shape
    hkv = key.shape[1]
    if attention_mask is not None and triton_attention.usable(query, key):
        # bf16/fp16 on CUDA at a large batch: the Triton decode kernel reads each KV head
        # once and skips masked slots (see triton_attention).
        scale = scaling if scaling is not None else d**-0.5
        return triton_attention.decode_attention(query, key, value, attention_mask, scale), None
    if q == 1 and hq != hkv:
        # One query token: the heads of a GQA group become the query rows of their KV head.
        out = F.scaled_dot_product_attention(query.reshape(b, hkv, hq // hkv, d), key, value,
                                             attn_mask=attention_mask, scale=scaling)
        out = out.reshape(b, hq, 1, d)
    else:
        # The prefill. In bf16/fp16 on CUDA, the memory-efficient kernel (`PREFILL_KERNEL`),
        # GQA's KV heads repeated for it, or PyTorch's pick (cuDNN, which reads the shared
        # heads as they are); elsewhere (CPU, float32) repeat them for the query heads.
        half = query.is_cuda and query.dtype in (torch.bfloat16, torch.float16)
        efficient = half and PREFILL_KERNEL == "efficient"
        gqa = hq != hkv and half and not efficient
        if hq != hkv and not gqa:
            key = key.repeat_interleave(hq // hkv, dim=1)
            value = value.repeat_interleave(hq // hkv, dim=1)
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]) if efficient else nullcontext():
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                 scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


@contextmanager
def static_attention(model: Any) -> Iterator[None]:
    """Use our attention function for `model`'s calls inside the block, then restore."""
    from transformers import AttentionInterface  # noqa: PLC0415 - transformers loads in seconds; only a registration needs it

    AttentionInterface.register(ATTENTION_NAME, _attention)
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = before


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def prefill_mask(prompt_valid: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, width, length): causal over the prompt slots, padding slots masked.

    A padding query may attend to its own slot, so no row of the mask is fully masked (that
    would give NaN); what padding positions compute is never read.
    """
    length = prompt_valid.shape[1]
    q = torch.arange(width, device=prompt_valid.device)[:, None]
    k = torch.arange(length, device=prompt_valid.device)[None, :]
    allowed = ((k <= q) & prompt_valid[:, None, :]) | (k == q)
    return _additive(allowed[:, None], dtype)


def decode_mask(prompt_valid: torch.Tensor, width: int, slot: torch.Tensor,
                arange: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, 1, length): the real prompt slots plus generated slots up to `slot`."""
    allowed = prompt_valid | ((arange >= width) & (arange <= slot))
    return _additive(allowed[:, None, None, :], dtype)


def model_step(model: Any, cache: Any, ids: torch.Tensor, mask: torch.Tensor,
               positions: torch.Tensor) -> torch.Tensor:
    """The model's float32 logits at the last position; `cache` (a `StaticKV`, or anything
    with its `update(keys, values, layer_idx)`) is written as it decides."""
    params = forward_params(type(model))
    # transformers renamed `past_key_values` to `cache`; speak whichever this version takes.
    key = "cache" if "cache" in params else "past_key_values"
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                logits_to_keep=1, **{key: cache})
    return out.logits[:, -1, :].float()
