"""Where a decode step's time goes at batch 256 (issue 5: the profiler's view of a missed target).

Warms our static-cache engine up (graphs captured), then profiles one `generate` call of 128
new tokens on a random-initialised 1.24B Llama with torch.profiler and prints the CUDA kernels
that took the most GPU time, grouped by name, for each nucleus search.

Run (device): python bench/profile_decode.py [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _llm import build, sync
from bench_generation import prompts

from runner.llm.decoding import (
    fastgen,
    triton_parts,
)
from runner.llm.decoding.generation import SamplingParams, generate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--nucleus", default="default", help="comma-separated: default, bisect, topk")
    ap.add_argument("--rows", type=int, default=14, help="kernels listed")
    ap.add_argument("--compiled", action="store_true",
                    help="compiled norms, rotary and MLPs (RUNNER_DECODE_COMPILE=always)")
    ap.add_argument("--eager-parts", action="store_true",
                    help="the model's own norms, rotary and MLP ops, not Triton kernels")
    args = ap.parse_args()
    os.environ[fastgen.COMPILE_ENV] = "always" if args.compiled else "never"
    triton_parts.ENABLED = not args.eager_parts
    lm, _ = build(args.tiny)
    vocab = lm.model.config.vocab_size
    sp = SamplingParams(temperature=0.7, top_p=0.9, repetition_penalty=1.15, max_new_tokens=128, stop_strings=())
    rows = prompts(args.batch, 256, vocab, 0)
    for nucleus in args.nucleus.split(","):
        fastgen.NUCLEUS = None if nucleus == "default" else nucleus
        generate(lm, rows, sp, seed=0, engine="static")  # capture / compile
        sync(lm)
        acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with torch.profiler.profile(activities=acts) as prof:
            generate(lm, rows, sp, seed=1, engine="static")
            sync(lm)
        key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
        print(f"\n=== nucleus={nucleus}, batch {args.batch}, 128 new tokens ===")
        print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=70))
        kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
        print(f"kernels launched: {sum(e.count for e in kernels)}")


if __name__ == "__main__":
    main()
