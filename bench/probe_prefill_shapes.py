"""Does a prefill pay a one-time cost for each new batch shape? (issue 15, items 1 and 2)

The refill engine admits a different number of rows nearly every round, so nearly every
prefill has a batch shape the process has not run before. In `bench_refill.py --sweep`
(bench/RESULTS_issue15.md 1b) admission took 1.5-2.0 s in a rule's first pass and 1.1 s in
its second, on the same work. This times the prefill's attention alone, as
`static_kv._attention` calls it (bf16, GQA 32/8 heads of 64, additive mask, 256 columns), for
row counts never run before and then again, under each SDPA backend that takes a mask:
PyTorch's own choice, cuDNN, and the memory-efficient kernel (GQA's heads repeated, as it
needs). Run (device): python bench/probe_prefill_shapes.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS: dict[str, list[SDPBackend] | None] = {
    "default": None,
    "cudnn": [SDPBackend.CUDNN_ATTENTION],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
}


def attention(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    gqa = name != "efficient"
    if not gqa:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    chosen = BACKENDS[name]
    if chosen is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    with sdpa_kernel(chosen):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def timed(fn: Any) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--width", type=int, default=256)
    args = ap.parse_args()
    dev, dt, w = torch.device("cuda"), torch.bfloat16, args.width
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(), "width": w}
    for b, name in enumerate(BACKENDS):
        rows = [40 + 16 * b + i for i in range(8)]  # row counts no backend has run yet
        first, again = [], []
        try:  # the backend's own one-time set-up, at a shape not timed below
            x = torch.randn(8, 32, w, 64, device=dev, dtype=dt)
            kv = torch.randn(8, 8, w, 64, device=dev, dtype=dt)
            attention(name, x, kv, kv, torch.zeros(8, 1, w, w, device=dev, dtype=dt))
        except RuntimeError:
            pass
        for n in rows:
            q = torch.randn(n, 32, w, 64, device=dev, dtype=dt)
            k = torch.randn(n, 8, w, 64, device=dev, dtype=dt)
            v = torch.randn_like(k)
            valid = torch.arange(w, device=dev)[None, :] >= torch.randint(0, w // 2, (n, 1), device=dev)
            allowed = (torch.arange(w, device=dev)[None, :, None] >= torch.arange(w, device=dev)[None, None, :]) & valid[:, None, :]
            allowed |= torch.eye(w, dtype=torch.bool, device=dev)[None]
            mask = torch.where(allowed, 0.0, torch.finfo(dt).min).to(dt)[:, None]
            call = partial(attention, name, q, k, v, mask)
            try:
                first.append(timed(call))
                again.append(min(timed(call) for _ in range(3)))
            except RuntimeError as exc:
                results[name] = {"error": str(exc)[:300]}
                break
        else:
            results[name] = {"rows": rows, "first_ms": [round(1e3 * x, 3) for x in first],
                             "again_ms": [round(1e3 * x, 3) for x in again],
                             "first_minus_again_ms_mean": round(
                                 1e3 * sum(f - a for f, a in zip(first, again)) / len(rows), 3)}
        print(name, results[name], flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "probe_prefill_shapes.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
