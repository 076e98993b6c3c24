"""Generation speed: our static-cache, CUDA-graph loop against `model.generate` (issue 5, item 2).

On a random-initialised 1.24B Llama in bf16 (see `_llm.py`), in one process, for the same
prompts (256 random tokens) and settings (128 new tokens, no EOS, sampling at temperature
0.7, top_p 0.9, repetition penalty 1.15), at batch 1, 64 and 256:

* tokens/s of `model.generate` (dynamic cache, the baseline of shared/device/MEASURED.md)
  and of `runner.llm.decoding.generation.generate(engine="static")`, and their ratio;
* our milliseconds per step (the whole call over the new tokens, prefill included) and the
  fraction of the memory-bandwidth bound: weights bytes / 3.0e12 B/s / step time;
* the first call's seconds (it captures the step graphs, and compiles for `compiled`) and the
  variant used (`--variants`, NUCLEUS/ATTENTION[/PARTS]: nucleus `bisect`, the exact
  threshold search, Triton kernels on CUDA; `bisect-eager`, the torch search; `topk`, which
  falls back to `sort` when the top-k candidates miss the nucleus, always so here; attention
  `triton`, the decode kernel of `triton_attention`, or `sdpa`, torch's SDPA with the GQA heads
  folded; parts, the decoder's norms, rotary embedding and MLP products: `fused`, Triton
  kernels (`triton_parts`, the phases' default), `compiled`, torch.compile'd into the step
  graphs (the phases switch it on after 1M tokens in a process), or `eager`, the model's ops).

Then the greedy check (`greedy_agreement.py`): our greedy rows against `model.generate(
do_sample=False)` on prompts of different lengths (left padded), beside `model.generate`
against itself (each row alone; its own static cache), in bf16 and again in float32.

Run (device): python bench/bench_generation.py [--append-results]
CPU smoke:    python bench/bench_generation.py --tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import greedy_agreement
import torch
from _llm import HBM_BYTES_PER_S, append_results, build, print_table, sync
from structlog.testing import capture_logs

from runner.llm.decoding import fastgen, triton_attention, triton_parts, triton_sampling
from runner.llm.decoding.generation import SamplingParams, generate


def prompts(batch: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (batch, length), generator=g).tolist()


def time_generate(lm, rows, sp: SamplingParams) -> float:
    """Seconds of one `model.generate` call with the same sampling settings."""
    ids = torch.tensor(rows, device=lm.device)
    sync(lm)
    t0 = time.perf_counter()
    with torch.inference_mode():
        lm.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                          temperature=sp.temperature, top_p=sp.top_p,
                          repetition_penalty=sp.repetition_penalty,
                          max_new_tokens=sp.max_new_tokens, pad_token_id=0)
    sync(lm)
    return time.perf_counter() - t0


def time_ours(lm, rows, sp: SamplingParams, reps: int, nucleus: str = "bisect",
              attention: str = "triton", parts: str = "fused") -> tuple[float, float, dict]:
    """(first call s, median of `reps` later calls s, what the log said)."""
    times = []
    fastgen.NUCLEUS = nucleus
    compiled = parts == "compiled"
    os.environ[fastgen.COMPILE_ENV] = "always" if compiled else "never"
    triton_parts.ENABLED = parts == "fused"
    triton_attention.MIN_PROGRAMS = 256 if attention == "triton" else 1 << 62
    with capture_logs() as logs:
        for rep in range(reps + 1):
            sync(lm)
            t0 = time.perf_counter()
            out = generate(lm, rows, sp, seed=rep, engine="static")
            sync(lm)
            times.append(time.perf_counter() - t0)
            assert all(g.tokens == sp.max_new_tokens for g in out)
    events = [e["event"] for e in logs]
    used = [e.get("variant") for e in logs if e["event"] == "fastgen_captured"]
    used = [v for v in dict.fromkeys(used) if v != "forward"] or (  # eager (CPU): no captures
        ["bisect"] if nucleus.startswith("bisect") else
        ["topk", "sort"] if "fastgen_rewind" in [e["event"] for e in logs] else ["topk"])
    fused = " (triton)" if nucleus == "bisect" and triton_sampling.available(lm.device) else ""
    attn = attention if triton_attention.usable(
        torch.zeros(len(rows), 1, 1, 128, dtype=lm.dtype, device=lm.device),
        torch.zeros(len(rows), lm.model.config.num_key_value_heads, 1, 1, device=lm.device)
    ) else "sdpa"
    info = {"variant": f"{nucleus}: " + "+".join(used) + fused + f", attention {attn}"
                       + {"compiled": ", compiled parts", "eager": ", eager parts"}.get(
                           parts, ", Triton parts" if triton_parts.usable(
                               lm.model, lm.device, lm.dtype) else ""),
            "graph_failed": "cuda_graph_unavailable" in events,
            "rewinds": events.count("fastgen_rewind")}
    return times[0], statistics.median(times[1:]), info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small float32 model on CPU (smoke)")
    ap.add_argument("--batches", default=None, help="comma-separated (default 1,64,256)")
    ap.add_argument("--prompt-len", type=int, default=None)
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--variants",
                    default="bisect/triton/compiled,bisect/triton/fused,bisect/triton/eager",
                    help="comma-separated NUCLEUS/ATTENTION[/PARTS]: nucleus bisect, "
                         "bisect-eager or topk; attention triton or sdpa; parts (norms, rotary, "
                         "MLP products): fused (Triton kernels, the default until compiled), "
                         "compiled (RUNNER_DECODE_COMPILE=always) or eager (the model's ops)")
    ap.add_argument("--reps", type=int, default=3, help="timed calls of ours after the first")
    ap.add_argument("--append-results", action="store_true")
    args = ap.parse_args()
    variants = [tuple((v.split("/") + ["triton", "fused"])[:3]) for v in args.variants.split(",")]
    for v in variants:  # a misspelt part would silently time another variant
        if (v[0] not in ("bisect", "bisect-eager", "topk") or v[1] not in ("triton", "sdpa")
                or v[2] not in ("fused", "compiled", "eager")):
            ap.error(f"--variants: {'/'.join(v)!r} is not NUCLEUS/ATTENTION[/PARTS] with NUCLEUS "
                     "bisect, bisect-eager or topk, ATTENTION triton or sdpa, PARTS fused, "
                     "compiled or eager")
    batches = [int(b) for b in (args.batches or ("1,4,8" if args.tiny else "1,64,256")).split(",")]
    plen = args.prompt_len or (32 if args.tiny else 256)
    new = args.new_tokens or (16 if args.tiny else 128)
    lm, params = build(args.tiny)
    weight_bytes = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    sp = SamplingParams(temperature=0.7, top_p=0.9, repetition_penalty=1.15, max_new_tokens=new)
    vocab = lm.model.config.vocab_size
    header = ["batch", "generate tok/s", "ours tok/s", "ratio", "ours ms/step", "BW bound",
              "first call s", "variant"]
    table = []
    for b in batches:
        rows = prompts(b, plen, vocab, b)
        time_generate(lm, rows[:1], dataclasses.replace(sp, max_new_tokens=2))  # warm-up
        base = b * new / time_generate(lm, rows, sp)
        for nucleus, attention, parts in variants:
            first, t, info = time_ours(lm, rows, sp, args.reps, nucleus, attention, parts)
            ours = b * new / t
            step = t / new
            variant = info["variant"] + (" (eager: graph failed)" if info["graph_failed"] else "")
            table.append([str(b), f"{base:,.0f}", f"{ours:,.0f}", f"{ours / base:.1f}x",
                          f"{step * 1e3:.2f}", f"{weight_bytes / HBM_BYTES_PER_S / step:.1%}",
                          f"{first:.2f}", variant])
            fastgen.clear_runners()
    print_table(header, table)
    # The greedy check runs the defaults the phases use.
    fastgen.NUCLEUS, triton_attention.MIN_PROGRAMS, triton_parts.ENABLED = None, 256, True
    os.environ.pop(fastgen.COMPILE_ENV, None)
    checks = greedy_agreement.report(lm, 8, min(plen, 64) if args.tiny else plen, 64)
    if lm.dtype != torch.float32:  # again in float32, where rounding no longer flips near-ties
        lm.model.float()
        lm = dataclasses.replace(lm, dtype=torch.float32)
        fastgen.clear_runners()
        checks += greedy_agreement.report(lm, 8, plen, 64)
    for line in checks:
        print(line)
    notes = [f"Model: random-initialised Llama, {params / 1e9:.2f}B parameters, weights "
             f"{weight_bytes / 1e9:.2f} GB; prompts {plen} random tokens, {new} new tokens, no "
             "EOS; T=0.7, top_p=0.9, repetition penalty 1.15. `ours` = `generate(engine="
             "\"static\")` (static KV cache, one CUDA graph per decode step, device sampling);"
             f" median of {args.reps} calls after a first one that captures the graphs. "
             "ms/step = call time / new tokens (prefill included); BW bound = weights bytes "
             "/ 3.0e12 B/s / step time.", *[f"{c}." for c in checks]]
    if args.append_results:
        append_results("Generation: static-cache CUDA-graph loop vs model.generate", lm, header,
                       table, notes)


if __name__ == "__main__":
    main()
