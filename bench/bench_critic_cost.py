"""What the calibrated critic costs: one label order vs debiased vs debiased + probe set (issue 12).

A `critic_filter` phase on N items runs, per item, one prompt (debiasing off), two prompts
(`debias: true`, the default: the swapped order has the same length up to a token), and on top
the probe set once per phase: for a pair critic 2 x min(`probes`, N) planted bad items
(mismatched and truncated) and the gold items held out of the few-shot file (16 in the shipped
fixtures), each in both orders. Scores go through `critic.score_prompts` (length buckets, last
position only), the very call the phase makes, on prompts of random tokens whose lengths
spread uniformly from `--min-len` to `--max-len`; each configuration is timed on its second
run (the first warms kernels up). The model is `_llm.py`'s random-initialised Llama: 1.24B in
bf16 on a GPU, a small float32 one with `--tiny` on CPU.

Run (device): python bench/bench_critic_cost.py [--append-results]
CPU:          python bench/bench_critic_cost.py --tiny [--append-results]
"""

from __future__ import annotations

import argparse
import random
import time

from _llm import append_results, build, print_table, sync

from runner.llm.critic import scoring as critic

GOLD = 16  # accepted examples of fixtures/fewshot/pair_critic.jsonl, held out as good probes


def mix(n: int, lo: int, hi: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1, vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def timed(lm, rows: list[list[int]]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of the second of two `score_prompts` calls. On a
    shared CPU the process time is the steadier figure: others' load does not count in it."""
    seconds = cpu = 0.0
    for _ in range(2):
        sync(lm)
        t0, c0 = time.perf_counter(), time.process_time()
        critic.score_prompts(lm, rows, (5, 6))
        sync(lm)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return seconds, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small float32 model on CPU")
    ap.add_argument("--items", type=int, default=None, help="default 4096 (tiny: 256)")
    ap.add_argument("--probes", type=int, default=24, help="with.probes (source items planted)")
    ap.add_argument("--min-len", type=int, default=20)
    ap.add_argument("--max-len", type=int, default=400)
    ap.add_argument("--append-results", action="store_true")
    args = ap.parse_args()
    n = args.items or (256 if args.tiny else 4096)
    lm, params = build(args.tiny)
    vocab = lm.model.config.vocab_size
    items = mix(n, args.min_len, args.max_len, vocab, seed=1)
    swapped = mix(n, args.min_len, args.max_len, vocab, seed=2)  # same length mix
    n_probe = 2 * min(args.probes, n) + GOLD
    probes = mix(2 * n_probe, args.min_len, args.max_len, vocab, seed=3)
    configs = [("one order (debias: false)", items),
               ("debiased (default)", items + swapped),
               ("debiased + probe set", items + swapped + probes)]
    base = None
    rows = []
    for name, prompts in configs:
        seconds, cpu = timed(lm, prompts)
        cost = cpu if lm.device.type == "cpu" else seconds
        base = base or cost
        rows.append([name, str(len(prompts)), f"{seconds:.2f}", f"{cpu:.2f}",
                     f"{n / seconds:,.0f}", f"{cost / base:.2f}x"])
    header = ["configuration", "prompts", "wall s", "CPU s", "items/s", "cost (CPU s on CPU)"]
    print_table(header, rows)
    if args.append_results:
        notes = [f"{n} items of {args.min_len}-{args.max_len} random tokens, "
                 f"{params / 1e6:.1f}M-parameter random Llama; probe set {n_probe} items "
                 f"(probes={args.probes}, {GOLD} gold) in both orders. Debiasing doubles the "
                 "forward work; the probe set adds a fixed amount per phase."]
        append_results("Critic cost: debiasing and probes", lm, header, rows, notes)


if __name__ == "__main__":
    main()
