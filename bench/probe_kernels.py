"""The Triton kernels of the decode step against torch, on batch-256 shapes (GPU only).

* nucleus draw (`runner/llm/decoding/triton_sampling.py`) on (256, 128,256) float32 logits, T=0.7,
  top_p=0.9: the torch `bisect` search eager, the torch `sort` variant, and the Triton kernels
  at a few chunk/ways/block settings, plain and replayed in a CUDA graph, each with the number
  of rows whose token equals the torch search's;
* decode attention (`runner/llm/decoding/triton_attention.py`) for 256 rows, 32 query and 8 KV heads of
  128, a 384-slot cache with 384 or 320 slots live: SDPA (GQA heads folded) against the Triton
  kernel at a few block sizes, with the achieved read rate of the live K and V.

Run (device): python bench/probe_kernels.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runner.llm.decoding import triton_attention as ta
from runner.llm.decoding import triton_sampling as ts
from runner.llm.decoding.sampling import Sampler, row_keys


def bench(fn, n: int = 50) -> float:
    """Milliseconds a call, CUDA events over n calls after one warm-up."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


def nucleus(rows: int = 256, vocab: int = 128256) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(rows, vocab, device="cuda", generator=gen) * 2
    keys, step = row_keys(list(range(rows)), torch.device("cuda")), torch.tensor([3], device="cuda")
    eager = Sampler(0.7, 0.9, 1.0, nucleus="bisect", fused=False)
    ref = eager.pick(logits.clone(), None, keys, step, "bisect")[0]
    sort = Sampler(0.7, 0.9, 1.0, nucleus="topk")
    print(f"torch bisect (eager): {bench(lambda: eager.pick(logits.clone(), None, keys, step, 'bisect'), 5):.3f} ms")
    print(f"torch sort variant: {bench(lambda: sort.pick(logits.clone(), None, keys, step, 'sort'), 10):.3f} ms")
    default = (ts.CHUNK, ts.WAYS, ts._BLOCK)
    for chunk, ways, block in [default, (2048, 16, 256), (8192, 16, 256), (4096, 8, 512),
                               (4096, 32, 128)]:
        ts.CHUNK, ts.WAYS, ts._BLOCK = chunk, ways, block
        ms = bench(lambda: ts.nucleus_draw(logits, keys, step, 0.7, 0.9))
        same = (ts.nucleus_draw(logits, keys, step, 0.7, 0.9) == ref).sum().item()
        print(f"triton CHUNK={chunk} WAYS={ways} BLOCK={block} passes={ts.passes(0.9, vocab)}: "
              f"{ms:.3f} ms, token equal to torch's for {same}/{rows} rows")
    ts.CHUNK, ts.WAYS, ts._BLOCK = default
    graph = torch.cuda.CUDAGraph()
    ts.nucleus_draw(logits, keys, step, 0.7, 0.9)
    with torch.cuda.graph(graph):
        out = ts.nucleus_draw(logits, keys, step, 0.7, 0.9)
    print(f"triton (default) replayed in a CUDA graph: {bench(graph.replay):.3f} ms, "
          f"equal for {(out == ref).sum().item()}/{rows} rows")


def attention(batch: int = 256, heads: int = 32, kv_heads: int = 8, length: int = 384,
              dim: int = 128) -> None:
    for live in (384, 320):
        q = torch.randn(batch, 1, heads, dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        k = torch.randn(batch, kv_heads, length, dim, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        allowed = torch.arange(length, device="cuda")[None, :] < live
        mask = torch.where(allowed, 0.0, torch.finfo(torch.bfloat16).min).to(torch.bfloat16)
        mask = mask.expand(batch, length)[:, None, None, :].contiguous()
        folded = q.reshape(batch, kv_heads, heads // kv_heads, dim)
        sdpa = bench(lambda q=folded, k=k, v=v, m=mask: F.scaled_dot_product_attention(q, k, v, attn_mask=m))
        ours = ta.decode_attention(q, k, v, mask, dim**-0.5)
        ref = F.scaled_dot_product_attention(folded, k, v, attn_mask=mask)
        err = (ours.float() - ref.reshape(batch, heads, 1, dim).transpose(1, 2).float()).abs().max()
        gigabytes = batch * kv_heads * live * dim * 2 * 2 / 1e9
        for block in (64, 128):
            ta._BLOCK_N = block
            ms = bench(lambda q=q, k=k, v=v, m=mask: ta.decode_attention(q, k, v, m, dim**-0.5))
            print(f"attention, {live}/{length} slots live ({gigabytes * 1e3:.0f} MB of K and V): "
                  f"SDPA {sdpa:.3f} ms, triton BLOCK_N={block} {ms:.3f} ms "
                  f"({gigabytes / ms:.2f} TB/s), max |difference| {err:.3g}")
        ta._BLOCK_N = 64


if __name__ == "__main__":
    nucleus()
    attention()
