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

The `bisect` variant (the default on CUDA) needs neither a sort nor K: it finds each row's nucleus
threshold t, the largest float32 t whose mass {p_i >= t} still reaches `top_p`, by bisection
on the float32 bit patterns of t (positive floats order like their bits), a fixed 30 steps
of one masked sum over the vocabulary each (bits of max p < 2**30, so 30 halvings end on the
exact float). That t is the boundary token's probability, so the kept set {p_i >= t} is the
sort's nucleus, except for exact ties with the boundary token, which `bisect` keeps all
(sorting keeps whichever of them the sort happens to put first). The draw is the same
inverse-CDF draw with the same uniform, but over the kept tokens in *vocabulary* order (not
descending probability), so for a given seed it draws other tokens than `topk`/`sort` do,
from the same distribution; it is deterministic (cumsum and sum are). On CUDA (`fused`) the
whole variant, temperature to draw, is one Triton kernel (`triton_sampling`) that does the
same search 32 candidates a pass, six passes over the row instead of thirty.

Randomness is counter-based: a row's uniform for step `s` is a hash of (row key, s). So a
row's stream depends on neither how many rows are finished nor how the batch is chunked, a
step can be recomputed after a rewind and draw the same number, and nothing random lives in
generator state a graph would have to capture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from runner.llm.decoding import triton_sampling

__all__ = ["VARIANTS", "Sampler", "nucleus_threshold", "row_keys", "uniforms"]

VARIANTS = ("greedy", "full", "topk", "sort", "bisect")
BISECT_STEPS = 30  # the bits of a probability <= 1.0 are below 2**30
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
    nucleus: str = "bisect"  # "bisect", or "topk" (with its `sort` fallback)
    fused: bool = False  # bisect as one Triton kernel (`triton_sampling`, CUDA)

    def first_variant(self) -> str:
        """greedy, full (no nucleus), bisect or topk; `sort` is what a topk miss falls back to."""
        if self.temperature <= 0:
            return "greedy"
        if self.top_p >= 1.0:
            return "full"
        return "bisect" if self.nucleus == "bisect" else "topk"

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
        if variant == "bisect" and self.fused:  # the same search and draw as one Triton kernel
            return triton_sampling.nucleus_draw(logits, keys, step, self.temperature,
                                                self.top_p), no_miss
        logits = logits / self.temperature
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        u = uniforms(keys, step)
        if variant == "full":
            cum = (logits - lse).exp().cumsum(dim=-1)
            return _draw(cum, u, cum.shape[1]), no_miss
        if variant == "bisect":
            probs = (logits - lse).exp()
            kept = torch.where(probs >= nucleus_threshold(probs, self.top_p), probs, 0.0)
            cum = kept.cumsum(dim=-1)
            total = cum[:, -1:]
            # Strictly below the kept mass (u * total may round up to it), so the first
            # position past the target is a kept token, never a dropped one after the last.
            target = torch.minimum(u[:, None] * total, total - total * 2.0**-22)
            return (cum <= target).sum(dim=-1), no_miss
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


def nucleus_threshold(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """(rows, 1): per row the largest float32 t with sum(p_i for p_i >= t) >= top_p.

    Bisection on the bits of t: `lo` is always feasible (0: every token), `hi` never (just
    above max p: no token), and 30 halvings of their gap (< 2**30) leave hi = lo + 1, so `lo`
    is exact. The masked sum is monotone in t (float addition is monotone in each operand
    and the reduction order is fixed), so the bisection is sound in float32 too.
    """
    top = probs.amax(dim=-1, keepdim=True).view(torch.int32)
    lo = torch.zeros_like(top)
    hi = top + 1
    for _ in range(BISECT_STEPS):
        mid = (lo + hi) >> 1
        mass = torch.where(probs >= mid.view(torch.float32), probs, 0.0).sum(-1, keepdim=True)
        ok = mass >= top_p
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
    return lo.view(torch.float32)


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
