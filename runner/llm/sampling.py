"""Token choice on the device, as fixed-shape tensor ops a CUDA graph can replay.

Every function here is branch-free on tensor *values* (no `.item()`, no host copy), so one
decode step, sampling included, is a single graph replay with no host synchronisation.

Semantics are those of the simple loop in `generation.py` (and of transformers' logits
processors): repetition penalty on the tokens seen so far (divide positive logits, multiply
negative ones), then greedy argmax when `temperature == 0`, else divide by the temperature
and keep the nucleus: in descending probability order, a token is kept while the mass of
the tokens before it is below `top_p` (the most likely token always). Among the kept tokens
one is drawn by inverse-CDF sampling with one uniform number per row.

Nucleus without sorting the vocabulary: the `topk` variant takes the `K` most likely tokens
(`torch.topk`), computes the nucleus on them, and flags a row whose K candidates are all
kept (the nucleus may reach past them) as a *miss*. The caller then redoes that step with the
`sort` variant (a full descending sort), which draws the same token whenever the nucleus fits
in K, because both use the same uniform and the same descending order.

Randomness is counter-based: a row's uniform for step `s` is a hash of (row key, s). So a
row's stream depends on neither how many rows are finished nor how the batch is chunked, a
step can be recomputed after a rewind and draw the same number, and nothing random lives in
generator state a graph would have to capture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Sampler", "VARIANTS", "row_keys", "uniforms"]

VARIANTS = ("greedy", "full", "topk", "sort")
_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    # (x * c) mod 2**32 for 0 <= x < 2**32, in int64 without overflow: split c in 16-bit halves
    # (signed 64-bit overflow is undefined in the kernels, so never rely on wrap-around).
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _M32


def _mix(x: torch.Tensor) -> torch.Tensor:
    # "lowbias32" (C. Wellons): a 32-bit integer hash with near-ideal avalanche.
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def row_keys(seeds: list[int], device: torch.device) -> torch.Tensor:
    """(rows, 2) int64: the low and high 32 bits of each row's 63-bit seed."""
    return torch.tensor([[s & _M32, (s >> 32) & _M32] for s in seeds], dtype=torch.long,
                        device=device)


def uniforms(keys: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """One float32 in (0, 1) per row, a pure function of (row key, step); `step` is (1,)."""
    h = _mix(keys[:, 0] ^ _mix((step & _M32) ^ keys[:, 1]))
    return ((h >> 8).float() + 0.5) * (1.0 / (1 << 24))


@dataclass(frozen=True)
class Sampler:
    """The sampling settings, and the variant each one needs."""

    temperature: float
    top_p: float
    repetition_penalty: float
    candidates: int = 1024  # K of the `topk` variant

    def first_variant(self) -> str:
        """greedy, full (no nucleus) or topk; `sort` is what a topk miss falls back to."""
        if self.temperature <= 0:
            return "greedy"
        return "full" if self.top_p >= 1.0 else "topk"

    def penalise(self, logits: torch.Tensor, seen: torch.Tensor | None) -> torch.Tensor:
        """Repetition penalty on `seen` (rows, n): ids of the prompt and output tokens so far.

        Gather and scatter as transformers' processor does: repeated ids get the same value,
        and it touches n entries a row instead of the whole vocabulary. Writes in place.
        """
        if seen is None or self.repetition_penalty == 1.0:
            return logits
        rp = self.repetition_penalty
        picked = logits.gather(1, seen)
        return logits.scatter_(1, seen, torch.where(picked < 0, picked * rp, picked / rp))

    def pick(
        self,
        logits: torch.Tensor,
        seen: torch.Tensor | None,
        keys: torch.Tensor,
        step: torch.Tensor,
        variant: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(token per row, miss per row) for float32 `logits` (rows, vocab)."""
        logits = self.penalise(logits, seen)
        no_miss = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
        if variant == "greedy":
            return logits.argmax(dim=-1), no_miss
        logits = logits / self.temperature
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        u = uniforms(keys, step)
        if variant == "full":
            cum = (logits - lse).exp().cumsum(dim=-1)
            return _draw(cum, u, cum.shape[1]), no_miss
        if variant == "topk":
            k = min(self.candidates, logits.shape[-1])
            vals, order = torch.topk(logits, k, dim=-1)
        elif variant == "sort":
            vals, order = torch.sort(logits, dim=-1, descending=True)
        else:
            raise ValueError(f"unknown sampling variant {variant!r}")
        probs = (vals - lse).exp()
        cum = probs.cumsum(dim=-1)
        keep = (cum - probs) < self.top_p
        keep[:, 0] = True  # the most likely token is always kept
        kept = keep.sum(dim=-1, keepdim=True)
        miss = keep[:, -1] if variant == "topk" else no_miss
        return order.gather(1, _draw(cum, u, kept)[:, None]).squeeze(1), miss


def _draw(cum: torch.Tensor, u: torch.Tensor, kept: torch.Tensor | int) -> torch.Tensor:
    """Inverse CDF: the first position whose cumulative mass exceeds u * (mass of the kept)."""
    if isinstance(kept, int):
        total = cum[:, -1:]
        last = torch.full_like(cum[:, :1], kept - 1, dtype=torch.long)
    else:
        last = kept - 1
        total = cum.gather(1, last)
    target = u[:, None] * total
    # The kept positions are a prefix and `cum` is non-decreasing, so counting the positions
    # at or below the target finds the draw; the clamp only guards float rounding at the end.
    return torch.minimum((cum <= target).sum(dim=-1, keepdim=True), last).squeeze(1)
