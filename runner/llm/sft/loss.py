"""A causal-LM loss that never materialises full-vocabulary logits for the whole batch.

Why: with a 128k vocabulary, `model(..., labels=...)` builds [batch, seq, vocab] logits, upcasts
them to float32 and keeps them (and their gradient) for backward: at batch 16 x 512 that is
several GB per copy, more than the 4-bit model itself. Here the decoder body runs once to give
hidden states; only positions whose next token carries loss (response tokens) are kept; and
cross-entropy runs over chunks of `chunk` such positions. Each chunk applies the lm_head, upcasts
its logits to float32 and returns a summed loss under `torch.utils.checkpoint`, so backward
recomputes that chunk's logits instead of storing them: peak extra memory is one chunk's logits.

The sum (not the mean) comes back with the number of target tokens, so a caller can normalise
over all micro-batches of an optimizer step (gradient accumulation then equals a bigger batch).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from runner.llm.sft.data import IGNORE, MicroBatch
from runner.llm.sft.tiled_loss import tiled_cross_entropy_sum

__all__ = ["causal_lm_parts", "chunked_loss_sum", "per_token_losses", "sft_loss_sum"]


def causal_lm_parts(model: Any) -> tuple[Any, Any, Any]:
    """(decoder body, lm_head, config) of a causal LM, itself or wrapped in a PeftModel.

    LoRA layers are injected in place into the base model's modules, so calling its decoder
    directly still trains the adapter.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings(), base.config


def _chunk_loss(hidden: torch.Tensor, targets: torch.Tensor, lm_head: Any,
                softcap: float | None) -> torch.Tensor:
    logits = lm_head(hidden).float()  # float32 for a stable log-softmax, one chunk only
    if softcap:  # models that soft-cap their final logits (Gemma-2 style) do it in forward
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, targets, reduction="sum")


def chunked_loss_sum(hidden: torch.Tensor, labels: torch.Tensor, lm_head: Any, chunk: int,
                     softcap: float | None = None, tiled: bool = False) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over labelled positions, `chunk` positions at a time.

    `hidden` [rows, seq, dim] are the final (normed) hidden states, `labels` [rows, seq] the
    unshifted labels (IGNORE where no loss), on any device. Returns (loss sum, target count).
    `tiled`: through `tiled_loss` (one [tokens, vocab] tile in memory at a time, `chunk`
    unused) when the lm_head is a plain bias-free linear layer.
    """
    if chunk < 1:
        raise ValueError(f"loss chunk must be >= 1, got {chunk}")
    targets = labels[:, 1:]
    # Positions are picked where the labels live: labels kept on the host (as the trainer
    # does) cost the GPU no synchronisation, unlike a boolean mask applied on the device.
    rows, cols = (targets != IGNORE).nonzero(as_tuple=True)
    n = int(rows.numel())
    if n == 0:
        return hidden.sum() * 0.0, 0  # keeps the graph connected; contributes nothing
    flat = (rows * hidden.shape[1] + cols).to(hidden.device, non_blocking=True)
    h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat)  # [n, dim]
    t = targets[rows, cols].to(hidden.device, non_blocking=True)
    if tiled and type(lm_head) is torch.nn.Linear and lm_head.bias is None:
        return tiled_cross_entropy_sum(h, t, lm_head, softcap), n
    total: torch.Tensor | None = None
    for start in range(0, n, chunk):
        hs, ts = h[start : start + chunk], t[start : start + chunk]
        if torch.is_grad_enabled() and hs.requires_grad:
            part = checkpoint(_chunk_loss, hs, ts, lm_head, softcap, use_reentrant=False)
        else:
            part = _chunk_loss(hs, ts, lm_head, softcap)
        total = part if total is None else total + part
    assert total is not None
    return total, n


def _hidden(model: Any, batch: MicroBatch) -> tuple[torch.Tensor, Any, float | None]:
    decoder, lm_head, config = causal_lm_parts(model)
    # attention_mask=None: transformers derives the block-diagonal causal mask of packed rows
    # from the restarting position_ids (see sft_data); unpacked rows need no mask at all.
    out = decoder(input_ids=batch.input_ids, position_ids=batch.position_ids,
                  attention_mask=None, use_cache=False)
    softcap = getattr(config, "final_logit_softcapping", None)
    return out.last_hidden_state, lm_head, softcap


def sft_loss_sum(model: Any, batch: MicroBatch, chunk: int,
                 tiled: bool = False) -> tuple[torch.Tensor, int]:
    """Forward one micro-batch: (summed response-token loss, number of response tokens)."""
    hidden, lm_head, softcap = _hidden(model, batch)
    return chunked_loss_sum(hidden, batch.labels, lm_head, chunk, softcap, tiled)


@torch.no_grad()
def per_token_losses(model: Any, batch: MicroBatch) -> torch.Tensor:
    """[rows, seq] float32 loss of the token at each position (0 where unlabelled).

    For tests and diagnostics: per-example losses of a packed batch are sums over segments.
    """
    hidden, lm_head, softcap = _hidden(model, batch)
    targets = batch.labels[:, 1:]
    logits = lm_head(hidden[:, :-1]).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    losses = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    losses = losses.masked_fill(targets == IGNORE, 0.0)
    return F.pad(losses, (1, 0))  # position p holds the loss of predicting token p
