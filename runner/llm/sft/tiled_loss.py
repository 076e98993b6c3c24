"""Cross-entropy through the lm_head in tiles: peak memory of one [tokens, vocab] tile, not a chunk.

Why: `loss.chunked_loss_sum` recomputes each chunk's logits in backward, but there a chunk of
1,024 positions over a 128k vocabulary still holds its bf16 logits, their float32 copy, the
log-softmax and its gradient at once: about 1.8 GB, the largest single allocation of a QLoRA
step of a 1B model. Here the logits exist one [token_chunk, vocab_chunk] tile at a time: the
forward combines the tiles' log-sum-exps per position (`logaddexp`) and picks the target's
logit, and saves only the per-position log-sum-exp; the backward recomputes each tile, turns it into
softmax minus one-hot and multiplies it straight into the hidden states' gradient (and the
lm_head's, when it trains). Same three matmul passes as the chunked loss (forward, recompute,
gradient); per-tile float32 arithmetic, so the loss equals the chunked one to float32
rounding, not bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["TOKEN_CHUNK", "VOCAB_CHUNK", "tiled_cross_entropy_sum"]

TOKEN_CHUNK = 2048
VOCAB_CHUNK = 16384  # a float32 tile of 2048 x 16384 is 128 MB


def _tile(h: torch.Tensor, w: torch.Tensor, softcap: float | None) -> torch.Tensor:
    logits = (h @ w.t()).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def _target_mask(targets: torch.Tensor, v0: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(target columns inside the tile, clamped; whether the target lies in the tile)."""
    inside = (targets >= v0) & (targets < v0 + width)
    return (targets - v0).clamp(0, width - 1), inside


class _TiledCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                dtype: torch.dtype, softcap: float | None, token_chunk: int,
                vocab_chunk: int) -> torch.Tensor:
        h, w = hidden.to(dtype), weight.to(dtype)
        n, vocab = h.shape[0], w.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=h.device)
        picked = torch.zeros(n, dtype=torch.float32, device=h.device)
        for t0 in range(0, n, token_chunk):
            ht, tt = h[t0 : t0 + token_chunk], targets[t0 : t0 + token_chunk]
            run: torch.Tensor | None = None  # log-sum-exp over the tiles so far
            for v0 in range(0, vocab, vocab_chunk):
                logits = _tile(ht, w[v0 : v0 + vocab_chunk], softcap)
                tile_lse = torch.logsumexp(logits, dim=1)
                run = tile_lse if run is None else torch.logaddexp(run, tile_lse)
                col, inside = _target_mask(tt, v0, logits.shape[1])
                got = logits.gather(1, col[:, None]).squeeze(1)
                picked[t0 : t0 + token_chunk] = torch.where(inside, got, picked[t0 : t0 + token_chunk])
            assert run is not None
            lse[t0 : t0 + token_chunk] = run
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.dtype, ctx.softcap, ctx.chunks = dtype, softcap, (token_chunk, vocab_chunk)
        return (lse - picked).sum()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        hidden, weight, targets, lse = ctx.saved_tensors
        token_chunk, vocab_chunk = ctx.chunks
        h, w = hidden.to(ctx.dtype), weight.to(ctx.dtype)
        n, vocab = h.shape[0], w.shape[0]
        want_w = ctx.needs_input_grad[1]
        grad_h = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if want_w else None
        scale = grad_out.float()
        for t0 in range(0, n, token_chunk):
            ht, tt = h[t0 : t0 + token_chunk], targets[t0 : t0 + token_chunk]
            lt = lse[t0 : t0 + token_chunk, None]
            for v0 in range(0, vocab, vocab_chunk):
                wt = w[v0 : v0 + vocab_chunk]
                logits = _tile(ht, wt, ctx.softcap)
                grad = torch.exp(logits - lt)  # softmax
                col, inside = _target_mask(tt, v0, logits.shape[1])
                grad.scatter_add_(1, col[:, None], -inside.float()[:, None])  # minus one-hot
                if ctx.softcap:  # d(c * tanh(z / c))/dz = 1 - tanh(z / c)^2
                    grad = grad * (1 - (logits / ctx.softcap) ** 2)
                g = (grad * scale).to(ctx.dtype)
                grad_h[t0 : t0 + token_chunk] += (g @ wt).float()
                if grad_w is not None:
                    grad_w[v0 : v0 + vocab_chunk] += (g.t() @ ht).float()
        return (grad_h.to(hidden.dtype), None if grad_w is None else grad_w.to(weight.dtype),
                None, None, None, None, None)


def tiled_cross_entropy_sum(hidden: torch.Tensor, targets: torch.Tensor, lm_head: Any,
                            softcap: float | None = None, token_chunk: int = TOKEN_CHUNK,
                            vocab_chunk: int = VOCAB_CHUNK) -> torch.Tensor:
    """Summed cross-entropy of `lm_head(hidden)` [n, vocab] against `targets` [n], in tiles.

    `lm_head` must be a bias-free linear layer. Under autocast its matmuls run in the autocast
    dtype (as `lm_head(hidden)` would); the soft-max arithmetic is float32.
    """
    device = hidden.device.type
    dtype = (torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device)
             else hidden.dtype)
    with torch.autocast(device, enabled=False):
        out: torch.Tensor = _TiledCrossEntropy.apply(hidden, lm_head.weight, targets, dtype,
                                                     softcap, token_chunk, vocab_chunk)
    return out
