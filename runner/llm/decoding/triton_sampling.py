"""The `bisect` nucleus draw as five small Triton kernels over (row, vocabulary chunk) grids.

Why: on the H100 at batch 256 the torch form of `sampling.Sampler.pick("bisect")` is about
forty kernels a step over a (rows, 128,256) float32 tensor (temperature, logsumexp, exp, 30
masked sums, cumsum, compare-and-count), 1.1 ms a step even when compiled (`bench/RESULTS.md`).
A first version here gave each row one program: 256 programs for 132 SMs, each walking its
row eight times, took 4 ms. So the vocabulary is cut into chunks of 4,096 and every pass is a
(row, chunk) grid of programs, with a tiny per-row kernel between passes:

1. `stats`  (row, chunk): max and sum of exp(x / T) of the chunk, per lane then once across;
2. `start`  (row): logsumexp of the row, and the search's first interval [lo, hi);
3. `mass`   (row, chunk): the chunk's mass {p >= c} at 16 candidates c spread over [lo, hi),
   accumulated per lane (no cross-thread reduction inside the loop);
4. `narrow` (row): sums the chunks, keeps the sub-interval where the mass crosses `top_p`;
   steps 3-4 repeat until the interval is one float (7 passes for top_p 0.9 and a 128k
   vocabulary). After `FULL_PASSES` of them, `compact` (row, chunk) packs the probabilities
   still inside [lo, hi) (a few percent) and sums those above it, and `packed_mass` does the
   later passes over the packed values alone;
5. `draw`   (row): finds the chunk where u * (kept mass) falls from the chunks' kept masses,
   and scans that chunk alone for the token.
All of it has fixed shapes and no host synchronisation, so it is captured in the step graph.

Semantics, as the torch form (`sampling.py`) but summed in another order:
- probabilities p_i = exp(x_i / T - logsumexp(x / T)) in float32;
- the threshold t is the largest float32 whose mass {p_i >= t} still reaches `top_p`, found
  on the bit patterns of t (positive floats order like their bits). `lo` stays feasible and
  `hi` infeasible. The first `lo` is (1 - top_p) / (4 V), not 0: the tokens below it weigh
  less than a quarter of (1 - top_p) in all, so it is feasible, and the search starts on ~8
  binades instead of ~120 (for top_p above 1 - 1e-5 it starts at 0);
- the draw is the same inverse-CDF draw in vocabulary order with the same uniform (the
  counter-based hash of `sampling.uniforms`, computed in the draw kernel): the first
  position whose running kept mass exceeds u * (kept mass), clamped just below the kept mass
  and to a kept token, so rounding can never pick a dropped one.
A row whose threshold or draw falls within float rounding of a boundary may pick another
token than the torch form; `tests/llm/decoding/test_triton_sampling.py` (Triton's interpreter on CPU)
checks that the others pick the same token.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from runner.llm.decoding import triton_support

try:  # Triton ships with CUDA builds of torch; the kernels' source needs `tl` as a global.
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU builds without Triton use the torch form
    tl = None

__all__ = ["CHUNK", "FULL_PASSES", "SOURCES", "UNSPECIALISED", "WAYS", "available", "nucleus_draw",
           "passes"]

WAYS = 16  # candidates a search pass evaluates at once (4 bits of the threshold a pass)
# Search passes over the whole row; then the few probabilities left inside [lo, hi) (about
# 1/256 of the first interval) are packed, and the later passes read only those.
FULL_PASSES = 2
CHUNK = 4096  # vocabulary entries a program of a (row, chunk) grid covers
_BLOCK = 256  # entries a program loads at a time
_KERNELS: dict[str, Any] = {}


def available(device: torch.device) -> bool:
    """True where the kernels run (`triton_support.available`)."""
    return tl is not None and triton_support.available(device)


def _stats_source(logits_ptr, max_ptr, sum_ptr, temperature,  # type: ignore[no-untyped-def]
                  vocab: tl.constexpr, CHUNKS: tl.constexpr, CHUNK: tl.constexpr,
                  BLOCK: tl.constexpr):
    # Compile-time vocabulary and loop bounds: one build per vocabulary size, and static loops,
    # which Triton's interpreter needs.
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    lanes = tl.arange(0, BLOCK)
    lane_max = tl.full([BLOCK], float("-inf"), tl.float32)
    lane_sum = tl.zeros([BLOCK], tl.float32)
    for start in range(0, CHUNK, BLOCK):
        idx = chunk * CHUNK + start + lanes
        x = tl.load(logits_ptr + row * vocab + idx, mask=idx < vocab, other=float("-inf"))
        x = x / temperature
        new_max = tl.maximum(lane_max, x)
        finite = new_max > float("-inf")
        scale = tl.where(finite, tl.exp(lane_max - new_max), 0.0)
        lane_sum = lane_sum * scale + tl.where(finite, tl.exp(x - new_max), 0.0)
        lane_max = new_max
    top = tl.max(lane_max, axis=0)
    live = lane_max > float("-inf")
    total = tl.sum(tl.where(live, lane_sum * tl.exp(lane_max - top), 0.0), axis=0)
    tl.store(max_ptr + row * CHUNKS + chunk, top)
    tl.store(sum_ptr + row * CHUNKS + chunk, total)


def _start_source(max_ptr, sum_ptr, lse_ptr, lo_ptr, hi_ptr, floor_bits,  # type: ignore[no-untyped-def]
                  CHUNKS: tl.constexpr, CHUNKS_POW2: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, CHUNKS_POW2)
    m = tl.load(max_ptr + row * CHUNKS + c, mask=c < CHUNKS, other=float("-inf"))
    s = tl.load(sum_ptr + row * CHUNKS + c, mask=c < CHUNKS, other=0.0)
    top = tl.max(m, axis=0)
    lse = top + tl.log(tl.sum(tl.where(m > float("-inf"), s * tl.exp(m - top), 0.0), axis=0))
    hi = tl.exp(top - lse).to(tl.int32, bitcast=True).to(tl.int64) + 1
    tl.store(lse_ptr + row, lse)
    tl.store(hi_ptr + row, hi)
    tl.store(lo_ptr + row, tl.minimum(hi - 1, floor_bits))


def _mass_source(logits_ptr, lse_ptr, lo_ptr, hi_ptr, mass_ptr, temperature,  # type: ignore[no-untyped-def]
                 vocab: tl.constexpr, CHUNKS: tl.constexpr, CHUNK: tl.constexpr,
                 BLOCK: tl.constexpr, WAYS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    lanes = tl.arange(0, BLOCK)
    ways = tl.arange(0, WAYS).to(tl.int64)
    lse = tl.load(lse_ptr + row)
    lo = tl.load(lo_ptr + row)
    cand = (lo + ((tl.load(hi_ptr + row) - lo) * ways) // WAYS).to(tl.int32)  # cand[0] == lo
    acc = tl.zeros([BLOCK, WAYS], tl.float32)
    for start in range(0, CHUNK, BLOCK):
        idx = chunk * CHUNK + start + lanes
        x = tl.load(logits_ptr + row * vocab + idx, mask=idx < vocab, other=float("-inf"))
        p = tl.exp(x / temperature - lse)
        bits = p.to(tl.int32, bitcast=True)
        acc += tl.where(bits[:, None] >= cand[None, :], p[:, None], 0.0)
    tl.store(mass_ptr + (row * CHUNKS + chunk) * WAYS + ways, tl.sum(acc, axis=0))


def _compact_source(logits_ptr, lse_ptr, lo_ptr, hi_ptr, buf_ptr, count_ptr, above_ptr,  # type: ignore[no-untyped-def]
                    temperature, vocab: tl.constexpr, CHUNKS: tl.constexpr,
                    CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    # The chunk's probabilities inside [lo, hi), packed to the front of its slice of `buf`,
    # their count, and the mass at or above hi, which every later candidate keeps whole.
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    lanes = tl.arange(0, BLOCK)
    lse = tl.load(lse_ptr + row)
    lo = tl.load(lo_ptr + row).to(tl.int32)
    hi = tl.load(hi_ptr + row).to(tl.int32)
    out = buf_ptr + (row * CHUNKS + chunk) * CHUNK
    count = tl.zeros([], tl.int32)
    above = tl.zeros([BLOCK], tl.float32)
    for start in range(0, CHUNK, BLOCK):
        idx = chunk * CHUNK + start + lanes
        x = tl.load(logits_ptr + row * vocab + idx, mask=idx < vocab, other=float("-inf"))
        p = tl.exp(x / temperature - lse)
        bits = p.to(tl.int32, bitcast=True)
        between = (bits >= lo) & (bits < hi) & (idx < vocab)
        above += tl.where(bits >= hi, p, 0.0)
        tl.store(out + count + tl.cumsum(between.to(tl.int32), axis=0) - 1, p, mask=between)
        count += tl.sum(between.to(tl.int32), axis=0)
    tl.store(count_ptr + row * CHUNKS + chunk, count)
    tl.store(above_ptr + row * CHUNKS + chunk, tl.sum(above, axis=0))


def _packed_mass_source(buf_ptr, count_ptr, above_ptr, lo_ptr, hi_ptr, mass_ptr,  # type: ignore[no-untyped-def]
                        CHUNKS: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
                        WAYS: tl.constexpr):
    # `_mass_source` over the packed probabilities: blocks past the count are skipped.
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    lanes = tl.arange(0, BLOCK)
    ways = tl.arange(0, WAYS).to(tl.int64)
    lo = tl.load(lo_ptr + row)
    cand = (lo + ((tl.load(hi_ptr + row) - lo) * ways) // WAYS).to(tl.int32)
    packed = buf_ptr + (row * CHUNKS + chunk) * CHUNK
    count = tl.load(count_ptr + row * CHUNKS + chunk)
    acc = tl.zeros([BLOCK, WAYS], tl.float32)
    for start in range(0, CHUNK, BLOCK):
        if start < count:
            p = tl.load(packed + start + lanes, mask=start + lanes < count, other=0.0)
            bits = p.to(tl.int32, bitcast=True)
            acc += tl.where(bits[:, None] >= cand[None, :], p[:, None], 0.0)
    above = tl.load(above_ptr + row * CHUNKS + chunk)
    tl.store(mass_ptr + (row * CHUNKS + chunk) * WAYS + ways, above + tl.sum(acc, axis=0))


def _narrow_source(mass_ptr, lo_ptr, hi_ptr, kept_ptr, chunk_kept_ptr, top_p,  # type: ignore[no-untyped-def]
                   CHUNKS: tl.constexpr, CHUNKS_POW2: tl.constexpr, WAYS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, CHUNKS_POW2)
    ways = tl.arange(0, WAYS).to(tl.int64)
    part = tl.load(mass_ptr + (row * CHUNKS + c[:, None]) * WAYS + ways[None, :],
                   mask=(c < CHUNKS)[:, None], other=0.0)
    mass = tl.sum(part, axis=0)  # monotone in the candidate: same sum order for each column
    lo = tl.load(lo_ptr + row)
    hi = tl.load(hi_ptr + row)
    cand = lo + ((hi - lo) * ways) // WAYS
    best = tl.max(tl.where((mass >= top_p) | (ways == 0), ways, 0), axis=0)
    tl.store(lo_ptr + row, tl.sum(tl.where(ways == best, cand, 0), axis=0))
    tl.store(hi_ptr + row, tl.where(best == WAYS - 1, hi,
                                    tl.sum(tl.where(ways == best + 1, cand, 0), axis=0)))
    tl.store(kept_ptr + row, tl.sum(tl.where(ways == best, mass, 0.0), axis=0))
    tl.store(chunk_kept_ptr + row * CHUNKS + c,
             tl.sum(tl.where(ways[None, :] == best, part, 0.0), axis=1), mask=c < CHUNKS)


def _draw_source(logits_ptr, lse_ptr, lo_ptr, kept_ptr, chunk_kept_ptr, keys_ptr, step_ptr,  # type: ignore[no-untyped-def]
                 step_stride, out_ptr, temperature, vocab: tl.constexpr, CHUNKS: tl.constexpr,
                 CHUNKS_POW2: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    # The row's uniform, bit for bit `sampling.uniforms(keys, step)`: one hash here instead of
    # some forty tiny torch kernels a step.
    # h = mix(low ^ mix(step ^ high)), "lowbias32" on uint64 values below 2**32 (products fit).
    low = tl.load(keys_ptr + 2 * row).to(tl.uint64)
    # One step for every row (stride 0), or each row's own (the refill engine's slots).
    h = (tl.load(step_ptr + row * step_stride).to(tl.uint64) & 0xFFFFFFFF) ^ tl.load(keys_ptr + 2 * row + 1).to(tl.uint64)
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & 0xFFFFFFFF
    h = h ^ (h >> 15)
    h = (h * 0x846CA68B) & 0xFFFFFFFF
    h = low ^ h ^ (h >> 16)
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & 0xFFFFFFFF
    h = h ^ (h >> 15)
    h = (h * 0x846CA68B) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    u = ((h >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)
    kept = tl.load(kept_ptr + row)
    # Strictly below the kept mass, so some kept position's running mass passes it.
    target = tl.minimum(u * kept, kept - kept * 2.384185791015625e-07)
    c = tl.arange(0, CHUNKS_POW2)
    per_chunk = tl.load(chunk_kept_ptr + row * CHUNKS + c, mask=c < CHUNKS, other=0.0)
    ends = tl.cumsum(per_chunk, axis=0)
    chunk = tl.sum(((ends <= target) & (c < CHUNKS)).to(tl.int32), axis=0)
    chunk = tl.minimum(chunk, tl.max(tl.where(per_chunk > 0, c, 0), axis=0))
    running = tl.sum(tl.where(c == chunk - 1, ends, 0.0), axis=0)
    lo = tl.load(lo_ptr + row).to(tl.int32)
    lse = tl.load(lse_ptr + row)
    lanes = tl.arange(0, BLOCK)
    below = tl.zeros([], tl.int64)
    last = tl.zeros([], tl.int64)
    for start in range(0, CHUNK, BLOCK):
        idx = chunk * CHUNK + start + lanes
        inside = idx < vocab
        x = tl.load(logits_ptr + row * vocab + idx, mask=inside, other=float("-inf"))
        p = tl.exp(x / temperature - lse)
        keep = (p.to(tl.int32, bitcast=True) >= lo) & inside
        cum = running + tl.cumsum(tl.where(keep, p, 0.0), axis=0)
        below += tl.sum(((cum <= target) & inside).to(tl.int64), axis=0)
        last = tl.maximum(last, tl.max(tl.where(keep, idx, 0).to(tl.int64), axis=0))
        running = tl.max(cum, axis=0)
    tl.store(out_ptr + row, tl.minimum(chunk.to(tl.int64) * CHUNK + below, last))


SOURCES = {"stats": _stats_source, "start": _start_source, "mass": _mass_source,
           "compact": _compact_source, "packed_mass": _packed_mass_source,
           "narrow": _narrow_source, "draw": _draw_source}
# Integer arguments Triton must not specialise on (by default it builds one variant for the
# value 1 and one for multiples of 16): the search's first bound changes with top_p, and the
# draw's step stride is 0 in the lockstep engine and 1 in the refill engine. Unspecialised,
# each kernel is built once per vocabulary, whatever the sampling settings or the engine
# (what `kernel_prebuild` relies on to build them ahead). Both are read once per row.
UNSPECIALISED: dict[str, tuple[str, ...]] = {"start": ("floor_bits",), "draw": ("step_stride",)}


def _kernels() -> dict[str, Any]:
    # Built on first use, so importing this module compiles nothing. With TRITON_INTERPRET=1
    # set before Triton is imported (tests/conftest.py does so on machines without CUDA),
    # `triton.jit` gives the interpreter, which runs the same source on CPU tensors.
    if not _KERNELS:
        import triton  # noqa: PLC0415 - Triton is optional: only CUDA builds of the kernel need it

        for name, source in SOURCES.items():
            _KERNELS[name] = triton.jit(source, do_not_specialize=UNSPECIALISED.get(name, ()))
    return _KERNELS


def _floor_bits(top_p: float, vocab: int) -> int:
    """Bits of the first `lo`: a float32 below which all tokens weigh < (1 - top_p) / 4."""
    if top_p > 1 - 1e-5:  # float sums of ~1 are not that exact: search from 0
        return 0
    floor = torch.tensor((1 - top_p) / (4 * vocab), dtype=torch.float32)
    return int(floor.view(torch.int32).item())


def passes(top_p: float, vocab: int) -> int:
    """Search passes that narrow [lo, hi) to one float for any row (hi <= bits(1.0) + 1)."""
    span = 0x3F800001 - _floor_bits(top_p, vocab)
    return max(1, math.ceil(math.log2(span) / math.log2(WAYS)))


def nucleus_draw(logits: torch.Tensor, keys: torch.Tensor, step: torch.Tensor,
                 temperature: float, top_p: float) -> torch.Tensor:
    """One token per row of float32 `logits` (rows, vocab), already penalised, drawn with the
    uniform `sampling.uniforms(keys, step)` ((rows, 2) int64 keys; a (1,) int64 step shared
    by every row, or (rows,) steps, one a row)."""
    if logits.dtype != torch.float32 or logits.dim() != 2 or not logits.is_contiguous():
        raise ValueError("nucleus_draw wants contiguous (rows, vocab) float32 logits")
    rows, vocab = logits.shape
    chunks = -(-vocab // CHUNK)
    pow2 = 1 << (chunks - 1).bit_length()
    dev = logits.device
    f32: dict[str, Any] = {"dtype": torch.float32, "device": dev}
    chunk_max, chunk_sum = torch.empty(rows, chunks, **f32), torch.empty(rows, chunks, **f32)
    lse, kept, chunk_kept = torch.empty(rows, **f32), torch.empty(rows, **f32), torch.empty(
        rows, chunks, **f32)
    lo, hi = torch.empty(rows, dtype=torch.long, device=dev), torch.empty(
        rows, dtype=torch.long, device=dev)
    mass = torch.empty(rows, chunks, WAYS, **f32)
    out = torch.empty(rows, dtype=torch.long, device=dev)
    keys, step = keys.contiguous(), step.contiguous()
    t, k = float(temperature), _kernels()
    k["stats"][(rows, chunks)](logits, chunk_max, chunk_sum, t, vocab=vocab, CHUNKS=chunks,
                               CHUNK=CHUNK, BLOCK=_BLOCK, num_warps=4)
    k["start"][(rows,)](chunk_max, chunk_sum, lse, lo, hi, _floor_bits(top_p, vocab),
                        CHUNKS=chunks, CHUNKS_POW2=pow2, num_warps=1)
    for search in range(passes(top_p, vocab)):
        if search < FULL_PASSES:
            k["mass"][(rows, chunks)](logits, lse, lo, hi, mass, t, vocab=vocab,
                                      CHUNKS=chunks, CHUNK=CHUNK, BLOCK=_BLOCK, WAYS=WAYS,
                                      num_warps=4)
        else:
            if search == FULL_PASSES:
                packed = torch.empty(rows, chunks, CHUNK, **f32)
                count = torch.empty(rows, chunks, dtype=torch.int32, device=dev)
                above = torch.empty(rows, chunks, **f32)
                k["compact"][(rows, chunks)](logits, lse, lo, hi, packed, count, above, t,
                                             vocab=vocab, CHUNKS=chunks, CHUNK=CHUNK,
                                             BLOCK=_BLOCK, num_warps=4)
            k["packed_mass"][(rows, chunks)](packed, count, above, lo, hi, mass,
                                             CHUNKS=chunks, CHUNK=CHUNK, BLOCK=_BLOCK,
                                             WAYS=WAYS, num_warps=4)
        k["narrow"][(rows,)](mass, lo, hi, kept, chunk_kept, float(top_p), CHUNKS=chunks,
                             CHUNKS_POW2=pow2, WAYS=WAYS, num_warps=1)
    stride = 0 if step.numel() == 1 else 1
    k["draw"][(rows,)](logits, lse, lo, kept, chunk_kept, keys, step, stride, out, t, vocab=vocab,
                       CHUNKS=chunks, CHUNKS_POW2=pow2, CHUNK=CHUNK, BLOCK=_BLOCK,
                       num_warps=4)
    return out
