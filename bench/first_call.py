"""What a fresh process pays before its first tokens: kernel builds, graph capture, cuBLAS.

Measures, in one fresh process on the benchmark model (`_llm.py`), the first and second
`generate` call of one shape (batch 16, prompts of 200 tokens, 64 new tokens, the pilot's
sampling settings) and the first and second critic call (`next_token_logits`, 64 rows of
200 tokens), under one of these variants of getting the Triton kernels built:

- `main`: as on main: no helper, and Triton specialises `rotary`, `start` and `draw` on
  their integer arguments as main does (this batch does not use the decode attention, whose
  runtime length is the branch's other change), so the first call builds what main builds;
- `fewer`: no helper, this branch's kernels (fewer specialisations);
- `helper`: `kernel_prebuild.start` before the model is built: a helper process builds the
  kernels into the Triton cache while the model is built; the first call does not wait;
- `helper-wait`: the same, and the first call waits for the helper first (what the phases
  do: the helper's workers finish sooner than the call would build the rest one by one);
  its first-call figure includes that wait;
- `thread`: `step_runner.prebuild_kernels`, a thread in this process (issue 15's first try).

`--cache cold|warm` only labels the run: the caller gives each variant a fresh
`TRITON_CACHE_DIR` and runs it twice (bench/gpu/first_call.sh). Each run appends one JSON
line to OUT/first_call.jsonl; `--report` turns them into first_call.json and first_call.md
and prints the table. `--tiny`: a small float32 model on CPU (the helper still builds the
kernels of its shape for compute capability 9.0, which needs no GPU).

Run (device): bash bench/gpu/first_call.sh      (CPU smoke: FIRST_CALL_TINY=1 bash ...)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import structlog
import torch
from _llm import bench_dims, build, print_table, sync

from runner.llm.critic.forward import next_token_logits
from runner.llm.decoding import triton_parts, triton_sampling, triton_support
from runner.llm.decoding.generation import SamplingParams, generate
from runner.llm.decoding.step_runner import prebuild_kernels
from runner.llm.kernel_prebuild import helper as kernel_prebuild
from runner.llm.kernel_prebuild import plan as kernel_plan

VARIANTS = ("main", "fewer", "helper", "helper-wait", "thread")
BATCH, PROMPT, NEW = 16, 200, 64


def timed(lm: Any, fn: Any) -> float:
    sync(lm)
    t0 = time.perf_counter()
    fn()
    sync(lm)
    return time.perf_counter() - t0


class Builds:
    """Triton's compile calls in this process: built (cache miss) or found on disk (hit)."""

    def __init__(self) -> None:
        self.built: list[str] = []
        self.hits: list[str] = []
        try:
            from triton import knobs

            knobs.compilation.listener = self._heard
        except Exception:  # an older Triton, or none: counts stay empty (reported as None)
            self.built = self.hits = None  # type: ignore[assignment]

    def _heard(self, *, src: Any, cache_hit: bool, **_: Any) -> None:
        name = getattr(getattr(src, "fn", None), "__name__", "?")
        (self.hits if cache_hit else self.built).append(name)


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    builds = Builds()
    if args.variant == "main":  # before any kernel is built: they specialise as on main
        triton_parts.UNSPECIALISED.clear()
        triton_sampling.UNSPECIALISED.clear()
    if args.no_kernels:
        triton_support.switch_off(RuntimeError("switched off by --no-kernels"),
                                  structlog.get_logger())
    # The dimensions alone, not transformers' LlamaConfig: the helper starts before this
    # process spends seconds importing transformers (as the phases read config.json).
    config = SimpleNamespace(model_type="llama", **bench_dims(args.tiny))
    cuda = torch.cuda.is_available() and not args.tiny
    helper = None
    if args.variant in ("helper", "helper-wait"):
        capability = torch.cuda.get_device_capability() if cuda else (9, 0)
        # All of the model's kernels, as the phases build them (this batch of 16 does not use
        # the decode attention: fewer than triton_attention.MIN_PROGRAMS row x KV-head pairs).
        helper = kernel_prebuild.start(kernel_plan.shape_of(config, torch.bfloat16, capability))
    elif args.variant == "thread":
        from transformers import LlamaConfig

        device = torch.device("cuda" if cuda else "cpu")
        prebuild_kernels(LlamaConfig(**bench_dims(args.tiny)), torch.bfloat16, device)
    lm, _ = build(args.tiny)
    built = time.perf_counter() - started
    waited = None
    if helper is not None and args.variant == "helper-wait":
        t0 = time.perf_counter()
        helper.wait(300)
        waited = time.perf_counter() - t0
    vocab = lm.model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(1, vocab, (64, PROMPT), generator=g).tolist()
    sp = SamplingParams(temperature=0.8, top_p=0.95, repetition_penalty=1.1, max_new_tokens=NEW)
    before = len(builds.built) if builds.built is not None else 0
    gen = [timed(lm, lambda s=s: generate(lm, rows[:BATCH], sp, seed=s)) for s in (0, 1)]
    first_done = time.perf_counter() - started
    parent_built = builds.built[before:] if builds.built is not None else None
    critic = [timed(lm, lambda: next_token_logits(lm, rows)) for _ in (0, 1)]
    record: dict[str, Any] = {
        "variant": args.variant, "cache": args.cache, "device": _device(lm),
        "model_build_s": round(built, 3), "helper_wait_s": waited and round(waited, 3),
        "generate_first_s": round(gen[0], 3), "generate_second_s": round(gen[1], 3),
        # What the caller waits for its first tokens once the model is there: the helper's
        # remaining time (helper-wait) and the first generate call.
        "first_call_s": round(gen[0] + (waited or 0.0), 3),
        "critic_first_s": round(critic[0], 3), "critic_second_s": round(critic[1], 3),
        "start_to_first_tokens_s": round(first_done, 3),
        "triton_built_in_first_call": parent_built,
        "triton_built_total": builds.built, "triton_cache_hits": builds.hits,
    }
    if helper is not None:
        code = helper.wait(300)
        record["helper"] = {"exit": code, "wall_s": round(time.perf_counter() - helper.started, 3),
                            "kernels": helper.report()}
    return record


def _device(lm: Any) -> str:
    from _llm import device_name

    return device_name(lm)


def report(out: Path) -> None:
    lines = (out / "first_call.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    (out / "first_call.json").write_text(json.dumps(records, indent=1))
    header = ["variant", "cache", "model build s", "first call s", "of it waiting s",
              "second s", "start to first tokens s", "kernels built in first call",
              "critic first s"]
    table = []
    for r in records:
        n = r.get("triton_built_in_first_call")
        table.append([r["variant"], r["cache"], f"{r['model_build_s']:.2f}",
                      f"{r['first_call_s']:.2f}", f"{r['helper_wait_s'] or 0:.2f}",
                      f"{r['generate_second_s']:.2f}",
                      f"{r['start_to_first_tokens_s']:.2f}", "?" if n is None else str(len(n)),
                      f"{r['critic_first_s']:.2f}"])
    device = records[0]["device"] if records else "?"
    md = [f"# First call ({device})", "", "| " + " | ".join(header) + " |",
          "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in table]
    helpers = [r for r in records if r.get("helper")]
    if helpers:
        md += ["", "Helper process (kernels built, its wall time):"]
        for r in helpers:
            h = r["helper"]
            ok = sum(1 for k in h["kernels"] if k.get("ok"))
            md.append(f"- {r['variant']} / {r['cache']}: exit {h['exit']}, {ok}/"
                      f"{len(h['kernels'])} kernels ok, {h['wall_s']:.2f} s")
    (out / "first_call.md").write_text("\n".join(md) + "\n")
    print_table(header, table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small float32 model on CPU (smoke)")
    ap.add_argument("--no-kernels", action="store_true", help="Triton kernels switched off")
    ap.add_argument("--variant", choices=VARIANTS, default="main")
    ap.add_argument("--prebuild", action="store_true", help="the same as --variant thread")
    ap.add_argument("--cache", default="?", help="label of the kernel cache's state (cold/warm)")
    ap.add_argument("--out", type=Path, help="folder: append this run to first_call.jsonl")
    ap.add_argument("--report", action="store_true",
                    help="write first_call.json and .md from OUT/first_call.jsonl, print the table")
    args = ap.parse_args()
    if args.prebuild:
        args.variant = "thread"
    if args.report:
        if args.out is None:
            ap.error("--report needs --out")
        report(args.out)
        return
    record = run(args)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "first_call.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    n = record["triton_built_in_first_call"]
    print(f"{record['variant']} ({record['cache']} cache, TRITON_CACHE_DIR="
          f"{os.environ.get('TRITON_CACHE_DIR', '~/.triton/cache')}): model build "
          f"{record['model_build_s']:.1f} s; first call {record['first_call_s']:.2f} s, "
          f"second {record['generate_second_s']:.2f} s; kernels built in the first call: "
          f"{'?' if n is None else len(n)}; critic first {record['critic_first_s']:.2f} s")


if __name__ == "__main__":
    main()
