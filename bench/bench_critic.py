"""Critic scoring speed on a realistic length mix: length buckets vs one padded batch (issue 5,
item 3).

On a random-initialised 1.24B Llama in bf16 (see `_llm.py`), prompts of random tokens whose
lengths spread uniformly from 20 to 400, scored with `critic.score_prompts` (last position
only, `logits_to_keep=1`):

* unbucketed: the prompts as they come, in batches of `--batch-rows` rows, each left-padded to
  its longest prompt (the path before buckets);
* bucketed M: all prompts at once through the length buckets (sorted by length, at most 10%
  of padding, at most M padded tokens a forward), one row per M of `--max-tokens` (a list).

For each: real tokens/s, TFLOP/s of useful work (2 × parameters × real tokens / s) and of
executed work (padded tokens), padding waste (padding over real tokens), forwards; and whether
the two give the same p_a (largest difference) and the same verdicts at p_a >= 0.5, in the
model's dtype and again with the model in float32 on the first `--f32-prompts` prompts (where
every verdict should agree). Each is timed on its second run (the first warms kernels up).

Run (device): python bench/bench_critic.py [--append-results]
CPU smoke:    python bench/bench_critic.py --tiny
"""

from __future__ import annotations

import argparse
import os
import random
import time

import torch
from _llm import append_results, build, print_table, sync

from runner.llm.critic import forward as critic_forward
from runner.llm.critic import scoring as critic
from runner.llm.critic.forward import COMPILE_ENV
from runner.llm.decoding import triton_parts

MATMUL_TFLOPS = 790.0  # a large bf16 matrix product on the H100 (MEASURED.md, KINDS.md)


def mix(n: int, lo: int, hi: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1, vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def run(lm, rows, labels, bucketed: bool, batch_rows: int, max_tokens: int,
        compile_mode: str = "never", kernels: bool = True):
    """(first run s, second run s, scores, stats) of scoring every row twice; `kernels`: the
    eager forward's norms, rotary and SiLU product as Triton kernels (`triton_parts`)."""
    os.environ[COMPILE_ENV] = compile_mode
    triton_parts.ENABLED = kernels
    runs = []
    for _timed in (False, True):  # the first pass warms up
        stats: dict[str, float] = {"forwards": 0, "real_tokens": 0, "padded_tokens": 0}
        scores = []
        sync(lm)
        t0 = time.perf_counter()
        if bucketed:
            scores = critic.score_prompts(lm, rows, labels, max_tokens=max_tokens, stats=stats)
        else:
            for i in range(0, len(rows), batch_rows):
                part: dict[str, float] = {}
                scores += critic.score_prompts(lm, rows[i : i + batch_rows], labels,
                                               bucketed=False, stats=part)
                for k in ("forwards", "real_tokens", "padded_tokens"):
                    stats[k] += part[k]
        sync(lm)
        runs.append(time.perf_counter() - t0)
    stats["padding_waste"] = (stats["padded_tokens"] - stats["real_tokens"]) / stats["real_tokens"]
    return runs[0], runs[1], scores, stats


def plain_scores(lm, rows, labels, batch_rows: int) -> list:
    """The reference: left-padded batches as they come, masked, transformers' own call."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(rows), batch_rows):
            logits = critic_forward._left_padded(lm, rows[i : i + batch_rows])
            lp = logits.log_softmax(dim=-1)[:, list(labels)].cpu().tolist()
            out += [critic.Score.from_logprobs(la, lb) for la, lb in lp]
    return out


def agreement(what: str, a, b) -> str:
    diff = max(abs(x.p_a - y.p_a) for x, y in zip(a, b))
    same = sum(x.accepted(0.5) == y.accepted(0.5) for x, y in zip(a, b))
    return (f"{what}: max |p_a difference| {diff:.2e}, verdicts at 0.5 identical for "
            f"{same}/{len(a)} prompts")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small float32 model on CPU (smoke)")
    ap.add_argument("--prompts", type=int, default=None, help="default 4096 (tiny: 64)")
    ap.add_argument("--min-len", type=int, default=20)
    ap.add_argument("--max-len", type=int, default=400)
    ap.add_argument("--batch-rows", type=int, default=128, help="rows a batch, unbucketed")
    ap.add_argument("--max-tokens", default="32768,65536,131072",
                    help="padded tokens a forward, comma-separated: one bucketed row each")
    ap.add_argument("--f32-prompts", type=int, default=None,
                    help="prompts of the float32 verdict check (default 384, tiny: 32; 0: skip)")
    ap.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=True,
                    help="also the first budget with compiled layers (RUNNER_CRITIC_COMPILE=always)")
    ap.add_argument("--append-results", action="store_true")
    args = ap.parse_args()
    lm, params = build(args.tiny)
    embed = lm.model.get_input_embeddings().weight.numel()
    n = args.prompts or (64 if args.tiny else 4096)
    rows = mix(n, args.min_len, args.max_len, lm.model.config.vocab_size)
    labels = (11, 12)
    header = ["path", "tokens/s", "TFLOP/s useful", "TFLOP/s executed", "of 790", "waste",
              "forwards", "seconds", "first run s"]
    table, results = [], {}
    budgets = [int(m) for m in args.max_tokens.split(",")]
    paths = [("unbucketed", False, budgets[0], "never", True)]
    paths += [(f"bucketed {m}", True, m, "never", True) for m in budgets]
    paths.append((f"bucketed {budgets[0]}, model's own norms/rotary/MLP ops", True, budgets[0],
                  "never", False))
    if args.compiled:
        paths.append((f"bucketed {budgets[0]} compiled", True, budgets[0], "always", True))
    for name, bucketed, max_tokens, mode, kernels in paths:
        first, seconds, scores, st = run(lm, rows, labels, bucketed, args.batch_rows,
                                         max_tokens, mode, kernels)
        results[name] = scores
        useful = 2 * params * st["real_tokens"] / seconds / 1e12
        executed = 2 * params * st["padded_tokens"] / seconds / 1e12
        table.append([name, f"{st['real_tokens'] / seconds:,.0f}", f"{useful:.1f}",
                      f"{executed:.1f}", f"{useful / MATMUL_TFLOPS:.1%}",
                      f"{st['padding_waste']:.1%}", str(int(st["forwards"])), f"{seconds:.2f}",
                      f"{first:.2f}"])
    print_table(header, table)
    a, b = results["unbucketed"], results[f"bucketed {budgets[0]}"]
    checks = [agreement(f"bucketed {budgets[0]} vs unbucketed ({str(lm.dtype)[6:]})", a, b)]
    if args.compiled:
        checks.append(agreement(f"bucketed {budgets[0]} compiled vs eager ({str(lm.dtype)[6:]})",
                                b, results[f"bucketed {budgets[0]} compiled"]))
    f32 = args.f32_prompts if args.f32_prompts is not None else (32 if args.tiny else 384)
    if f32:  # again in float32, where rounding no longer flips near-ties
        lm.model.float()
        part = rows[:f32]
        a = plain_scores(lm, part, labels, args.batch_rows)
        checks += [agreement(f"bucketed {m} vs unbucketed masked left-padded transformers "
                             f"call (float32, first {f32} prompts)", a,
                             run(lm, part, labels, True, args.batch_rows, m)[2])
                   for m in budgets]
    for line in checks:
        print(line)
    notes = [f"Model: random-initialised Llama, {params / 1e9:.2f}B parameters; {n} prompts of "
             f"random tokens, lengths uniform in [{args.min_len}, {args.max_len}]; "
             f"unbucketed = batches of {args.batch_rows} rows as they come; bucketed = "
             f"`score_prompts` length buckets (<= 10% padding, <= `max_tokens` padded "
             "tokens a forward, the number after `bucketed`); every path right-pads without a "
             "mask (`critic_forward`); `compiled` = decoder layers torch.compile'd "
             "(RUNNER_CRITIC_COMPILE=always; its first run includes compiling). seconds = the "
             "second of two runs. TFLOP/s = 2 x parameters x tokens / s, the issue's convention "
             "(useful: real tokens; executed: padded tokens; it counts the tied embedding, "
             f"{embed / 1e9:.2f}B, though only the last positions go through lm_head: the "
             f"matrix work done is {(params - embed) / params:.0%} of it); `of 790` = useful "
             "over a large bf16 matmul's rate.",
             *[f"{c}." for c in checks]]
    if args.append_results:
        append_results("Critic: length buckets vs unbucketed batches", lm, header, table, notes)


if __name__ == "__main__":
    main()
