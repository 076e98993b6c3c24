"""What a fresh process pays before its first tokens: kernel builds, graph capture, cuBLAS.

The pilot's generate_instructions phase spends most of its ~18 s before the first decode
graph is captured (bench/RESULTS.md, pilot logs). This measures, in one fresh process on the
benchmark model (`_llm.py`), the first and second `generate` call of one shape (batch 16,
prompts of 200 tokens, 64 new tokens, the pilot's sampling settings) and the first and second
critic call (`next_token_logits`, 64 rows of 200 tokens). Run it twice with one
`TRITON_CACHE_DIR`: the first run builds the Triton kernels, the second finds them on disk,
as every later process on a machine does. `--no-kernels` switches them off (the torch paths).

Run (device):
  d=$(mktemp -d); for i in 1 2; do TRITON_CACHE_DIR=$d python bench/first_call.py; done
  python bench/first_call.py --no-kernels
"""

from __future__ import annotations

import argparse
import os
import time

import structlog
import torch
from _llm import bench_dims, build, sync

from runner.llm.critic.forward import next_token_logits
from runner.llm.decoding import triton_support
from runner.llm.decoding.generation import SamplingParams, generate
from runner.llm.decoding.step_runner import prebuild_kernels


def timed(lm, fn) -> float:
    sync(lm)
    t0 = time.perf_counter()
    fn()
    sync(lm)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small float32 model on CPU (smoke)")
    ap.add_argument("--no-kernels", action="store_true", help="Triton kernels switched off")
    ap.add_argument("--prebuild", action="store_true",
                    help="build the kernels on a thread while the model is built (step_runner.prebuild_kernels)")
    args = ap.parse_args()
    started = time.perf_counter()
    if args.no_kernels:
        off = RuntimeError("switched off by --no-kernels")
        triton_support.switch_off(off, structlog.get_logger())
    if args.prebuild:  # as the phases do: the kernels build while the model loads
        from transformers import LlamaConfig

        config = LlamaConfig(**bench_dims(args.tiny))
        device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
        prebuild_kernels(config, torch.bfloat16, device)
    lm, _ = build(args.tiny)
    built = time.perf_counter() - started
    vocab = lm.model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(1, vocab, (64, 200), generator=g).tolist()
    sp = SamplingParams(temperature=0.8, top_p=0.95, repetition_penalty=1.1, max_new_tokens=64)
    gen = [timed(lm, lambda s=s: generate(lm, rows[:16], sp, seed=s)) for s in (0, 1)]
    critic = [timed(lm, lambda: next_token_logits(lm, rows)) for _ in (0, 1)]
    cache = os.environ.get("TRITON_CACHE_DIR", "~/.triton/cache")
    files = sum(len(f) for _, _, f in os.walk(os.path.expanduser(cache))) if cache else 0
    print(f"kernels {'off' if args.no_kernels else 'on'}{', prebuilt' if args.prebuild else ''}, Triton cache {files} files after: "
          f"model build {built:.1f} s; generate first {gen[0]:.2f} s, second {gen[1]:.2f} s; "
          f"critic first {critic[0]:.2f} s, second {critic[1]:.2f} s")


if __name__ == "__main__":
    main()
