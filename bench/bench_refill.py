"""Useful tokens/s on the realistic length mix: continuous refill against the rest (issue 15).

The mix is made by the model itself, as in shared/device/MEASURED.md ("Realistic length mix"),
so every engine sees the same EOS: the random-initialised 1.24B Llama of `_llm.py` with
`tie_word_embeddings=False` and its `lm_head` replaced by an `nn.Linear(..., bias=True)`
holding the same weights and a bias on EOS (id 2) alone, set to
`T * (log(p / (1 - p)) + mean logsumexp(logits / T))` at the prompts' last position, p = 0.03,
T = 0.7: a row stops with probability ~3% a step. 1,024 prompts of 256 random tokens, top_p
0.9, repetition penalty 1.15, at most 128 new tokens. In ONE process:

* ours before refill: `generate(engine="static")` (the lockstep engine, as on main) in calls
  of 256 rows, as a phase with `batch_size: 256` ran it, and in one call of 1,024 rows;
* ours after refill: `refill.stream_refill` with 256 (and 512) slots over the 4 batches;
* transformers' continuous batching (`generate_batch`) and `generate` in static batches of
  256, both with `top_k=0`. Left at its default, transformers samples with `top_k=50`
  (GenerationConfig's default): on a random model's nearly flat distribution the 50 kept
  tokens hold little mass besides the EOS-biased one, so EOS wins almost every draw: the
  "stopped nearly every row at once" of MEASURED.md. The default is run too, to show it.
* our rate when no row stops early (EOS off, 128 tokens a row), the 100% of the target;
* the decode step as a fraction of a roofline (weights read once a step + the KV cache read
  by the attention: each slot's prompt and its tokens so far), with the copy bandwidth
  measured here; and the prefill's share (its FLOPs at 790 TFLOP/s bound what any engine
  can reach on this mix, since every row prefills 256 tokens for ~18 useful ones).

Useful tokens: generated tokens before EOS (EOS not counted), summed over rows.
Run (device): python bench/bench_refill.py --out $OUT       CPU smoke: --tiny
Only refill at 256 slots, per round rule and prefill attention kernel, new shapes then seen
ones: --sweep adaptive,8 --prefill efficient,auto --repeats 2   (bench_refill_sweep.json)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _llm import IdTokenizer, build, device_name, print_table, sync

from runner.llm.decoding import fastgen, refill, static_kv
from runner.llm.decoding.generation import SamplingParams, generate
from runner.llm.decoding.slot_runner import SlotRunner

EOS, P_STOP, T = 2, 0.03, 0.7
BF16_FLOPS = 790e12  # the H200's measured bf16 matrix rate (KINDS.md; critic bench 86% of it)


class EosTokenizer(IdTokenizer):
    eos_token_id = EOS


def mix_model(tiny: bool, prompts: list[list[int]]) -> Any:
    """The benchmark model with an untied, EOS-biased lm_head (see the module's docstring)."""
    lm, _ = build(tiny)
    model = lm.model
    emb = model.get_input_embeddings().weight
    head = torch.nn.Linear(emb.shape[1], emb.shape[0], bias=True, device=emb.device,
                           dtype=emb.dtype)
    with torch.no_grad():
        head.weight.copy_(emb)
        head.bias.zero_()
    model.config.tie_word_embeddings = False
    model.lm_head = head
    with torch.inference_mode():
        ids = torch.tensor(prompts[:64], device=lm.device)
        logits = model(input_ids=ids, logits_to_keep=1).logits[:, -1].float()
        lse = torch.logsumexp(logits / T, dim=-1).mean().item()
    with torch.no_grad():
        head.bias[EOS] = T * (math.log(P_STOP / (1 - P_STOP)) + lse)
    model.generation_config.eos_token_id = EOS
    model.generation_config.pad_token_id = 0
    lm.tokenizer = EosTokenizer()  # the same ids, now with EOS
    return lm


def timed(lm: Any, fn: Any) -> tuple[float, Any]:
    sync(lm)
    t0 = time.perf_counter()
    out = fn()
    sync(lm)
    return time.perf_counter() - t0, out


def useful(lengths: list[int]) -> dict[str, float]:
    s = sorted(lengths)
    return {"rows": len(s), "useful": sum(s), "mean": statistics.mean(s), "median": s[len(s) // 2],
            "at_cap": sum(1 for x in s if x >= 128) / len(s)}


def ours_lockstep(lm, prompts, sp, chunk: int) -> list[int]:
    out = []
    for n, start in enumerate(range(0, len(prompts), chunk)):
        out += generate(lm, prompts[start : start + chunk], sp, seed=100 + n, engine="static")
    return [g.tokens for g in out]


class TimingLog:
    """A stand-in for the refill loop's logger that keeps its `refill_timing` line."""

    def __init__(self) -> None:
        self.timing: dict[str, Any] = {}

    def info(self, event: str, **kw: Any) -> None:
        if event == "refill_timing":
            self.timing = kw

    def warning(self, event: str, **kw: Any) -> None:
        print(event, kw, flush=True)


def ours_refill(lm, prompts, sp, slots: int, chunk: int = 256, block: int = refill.BLOCK,
                longest: int = refill.LONGEST_BLOCK, log: Any = None) -> list[int]:
    work = [(n, prompts[s : s + chunk], 100 + n) for n, s in enumerate(range(0, len(prompts), chunk))]
    return [g.tokens for _, gens in refill.stream_refill(lm, work, sp, slots, block=block,
                                                         longest=longest, log=log)
            for g in gens]


def sweep(lm: Any, prompts: list[list[int]], other: list[list[int]], sp: SamplingParams,
          slots: int, chunk: int, blocks: list[str], kernels: list[str],
          repeats: int) -> list[dict[str, Any]]:
    """Refill at `slots` slots with each round rule of `blocks` ("adaptive", or a fixed
    number of steps) and each prefill attention kernel of `kernels` (`static_kv.
    PREFILL_KERNEL`), interleaved `repeats` times in this process: useful tok/s and the loop's
    own timing line (rounds, steps, admission and device seconds) per run. The warm-up runs on
    `other` prompts, so the first pass meets this work's admission shapes for the first time,
    as a phase does (a kernel that plans per shape pays there); later passes have seen them."""
    rows = []
    kept = static_kv.PREFILL_KERNEL
    try:
        for rep in range(repeats):
            for name in blocks:
                b, longest = ((refill.BLOCK, refill.LONGEST_BLOCK) if name == "adaptive"
                              else (int(name), int(name)))
                for kernel in kernels:
                    static_kv.PREFILL_KERNEL = kernel
                    if rep == 0:  # its runner and graph built untimed, on other prompts
                        ours_refill(lm, other, sp, slots, chunk, b, longest)
                    log = TimingLog()
                    t, lengths = timed(lm, lambda b=b, longest=longest, log=log: ours_refill(
                        lm, prompts, sp, slots, chunk, b, longest, log))
                    u = useful(lengths)
                    rows.append({"rule": name, "prefill": kernel, "repeat": rep, "seconds": t,
                                 "useful_tok_s": u["useful"] / t, **log.timing})
                    print({k: (round(v, 3) if isinstance(v, float) else v)
                           for k, v in rows[-1].items()}, flush=True)
    finally:
        static_kv.PREFILL_KERNEL = kept
    return rows


def hf_kwargs(sp: SamplingParams, top_k: int | None) -> dict[str, Any]:
    kw = dict(do_sample=True, temperature=sp.temperature, top_p=sp.top_p,
              repetition_penalty=sp.repetition_penalty, max_new_tokens=sp.max_new_tokens,
              eos_token_id=EOS, pad_token_id=0)
    if top_k is not None:
        kw["top_k"] = top_k
    return kw


def hf_generate(lm, prompts, sp, chunk: int, top_k: int | None) -> list[int]:
    lengths = []
    with torch.inference_mode():
        for start in range(0, len(prompts), chunk):
            ids = torch.tensor(prompts[start : start + chunk], device=lm.device)
            out = lm.model.generate(ids, attention_mask=torch.ones_like(ids),
                                    **hf_kwargs(sp, top_k))[:, ids.shape[1]:].tolist()
            for row in out:
                lengths.append(row.index(EOS) if EOS in row else len(row))
    return lengths


def hf_generate_batch(lm, prompts, sp, top_k: int | None) -> list[int]:
    from transformers import GenerationConfig

    config = GenerationConfig(**hf_kwargs(sp, top_k))
    # Not under inference_mode: its generation loop runs in a thread of its own, which may
    # not write tensors made in inference mode.
    out = lm.model.generate_batch(inputs=prompts, generation_config=config)
    lengths = []
    for res in out.values():
        toks = list(res.generated_tokens)
        lengths.append(toks.index(EOS) if EOS in toks else len(toks))
    return lengths


class Meter:
    """Times SlotRunner's prefills and decode blocks (with a sync each: attribution only)."""

    def __init__(self, lm: Any) -> None:
        self.lm, self.prefill_s, self.decode_s, self.steps, self.prefill_rows = lm, 0.0, 0.0, 0, 0
        self.slot_ctx = 0  # sum over decode steps of the KV positions read (all slots)
        self._admit, self._block = SlotRunner.admit, SlotRunner.run_block

    def __enter__(self) -> Meter:
        meter = self

        def admit(runner, slots, ids, mask, keys, sources=None, **kw):
            t, _ = timed(meter.lm, lambda: meter._admit(runner, slots, ids, mask, keys, sources,
                                                        **kw))
            meter.prefill_s += t
            meter.prefill_rows += sum(1 for s in (sources or [None] * len(slots)) if s is None)

        def block(runner, n, log):
            ctx = int((runner.base + runner.step).sum())  # positions read at this block's start
            t, out = timed(meter.lm, lambda: meter._block(runner, n, log))
            meter.decode_s += t
            meter.steps += n
            meter.slot_ctx += n * ctx + runner.slots * n * (n - 1) // 2
            return out

        SlotRunner.admit, SlotRunner.run_block = admit, block  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        SlotRunner.admit, SlotRunner.run_block = self._admit, self._block  # type: ignore[method-assign]


def copy_bandwidth(lm: Any) -> float:
    """Bytes/s of a device-to-device copy (read + write), the memory ceiling here."""
    if lm.device.type != "cuda":
        return 3.0e12
    x = torch.empty(1 << 30, dtype=torch.uint8, device=lm.device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    t, _ = timed(lm, lambda: [y.copy_(x) for _ in range(10)])
    return 2 * x.numel() * 10 / t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small float32 model on CPU (smoke)")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--hf-rows", type=int, default=None, help="prompts for generate_batch")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-hf", action="store_true", help="no transformers baselines")
    ap.add_argument("--sweep", default="", metavar="ROUNDS",
                    help="only time refill at 256 slots for each round rule, e.g. "
                         "adaptive,4,6,8,12 (a fixed number of steps), interleaved --repeats times")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--prefill", default="efficient",
                    help="the sweep's prefill attention kernels: efficient (as shipped) and/or "
                         "auto (PyTorch's pick: cuDNN)")
    args = ap.parse_args()
    kernels = [k for k in args.prefill.split(",") if k]
    if not kernels or set(kernels) - {"efficient", "auto"}:
        ap.error(f"--prefill: {args.prefill} is not a list of efficient and auto")
    blocks = [b for b in args.sweep.split(",") if b]
    bad = [b for b in blocks if b != "adaptive" and not (b.isdigit() and int(b) > 0)]
    if bad:
        ap.error(f"--sweep: {', '.join(bad)} is not adaptive or a positive number of steps")
    rows = args.rows or (16 if args.tiny else 1024)
    plen, chunk = (32, 8) if args.tiny else (256, 256)
    g = torch.Generator().manual_seed(0)
    vocab = 1000 if args.tiny else 128256
    prompts = torch.randint(3, vocab, (rows, plen), generator=g).tolist()
    lm = mix_model(args.tiny, prompts)
    sp = SamplingParams(temperature=T, top_p=0.9, repetition_penalty=1.15,
                        max_new_tokens=24 if args.tiny else 128)
    results: dict[str, Any] = {"device": device_name(lm), "rows": rows}
    if blocks:
        other = torch.randint(3, vocab, (rows, plen), generator=g).tolist()
        results["sweep"] = sweep(lm, prompts, other, sp, 8 if args.tiny else 256, chunk,
                                 blocks, kernels, args.repeats)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "bench_refill_sweep.json").write_text(json.dumps(results, indent=1))
        return
    table = []

    def record(name: str, fn: Any, n_rows: int, warm: Any = None) -> dict[str, float]:
        try:
            if warm is not None:
                warm()
            t, lengths = timed(lm, fn)
        except Exception as exc:  # a baseline that does not run here is reported, not fatal
            results[name] = {"error": repr(exc)[:500]}
            table.append([name, str(n_rows), "error", "", "", "", repr(exc)[:60]])
            print(table[-1], flush=True)
            return {}
        u = useful(lengths)
        u.update(seconds=t, useful_tok_s=u["useful"] / t)
        results[name] = u
        table.append([name, str(n_rows), f"{u['mean']:.1f}", str(u["median"]),
                      f"{u['at_cap']:.1%}", f"{t:.2f}", f"{u['useful_tok_s']:,.0f}"])
        print(table[-1], flush=True)
        return u

    few = prompts[:chunk]
    # Each refill variant is warmed on the very work it is timed on: a run admits rows in
    # counts the warm-up must have seen, or the timed run pays first-use costs of those
    # prefill shapes (2026-12-01: a 256-row warm-up left the first variant 10-30% slower
    # than the same variant timed again, bench/RESULTS_issue15.md 1e).
    record("ours lockstep, calls of 256", lambda: ours_lockstep(lm, prompts, sp, chunk), rows,
           warm=lambda: ours_lockstep(lm, few, sp, chunk))
    fastgen.clear_runners()
    if not args.tiny:
        record("ours lockstep, one call", lambda: ours_lockstep(lm, prompts, sp, rows), rows,
               warm=lambda: ours_lockstep(lm, prompts[:rows], sp, rows))
        fastgen.clear_runners()
    for slots in ((4, 8) if args.tiny else (256, 512)):
        record(f"ours refill, {slots} slots", lambda s=slots: ours_refill(lm, prompts, sp, s, chunk),
               rows, warm=lambda s=slots: ours_refill(lm, prompts, sp, s, chunk))
    small = 8 if args.tiny else 256
    b = refill.BLOCK  # every round `b` steps: the engine before its blocks adapted to the mix
    record(f"ours refill, {small} slots, fixed block {b}",
           lambda: ours_refill(lm, prompts, sp, small, chunk, b, b), rows,
           warm=lambda: ours_refill(lm, prompts, sp, small, chunk, b, b))
    record(f"ours refill, {small} slots, fixed block 16",
           lambda: ours_refill(lm, prompts, sp, small, chunk, 16, 16), rows,
           warm=lambda: ours_refill(lm, prompts, sp, small, chunk, 16, 16))
    with Meter(lm) as meter:  # the same 256-slot run again, prefill and decode timed apart
        ours_refill(lm, prompts, sp, small, chunk)
    print({k: v for k, v in vars(meter).items() if not k.startswith("_") and k != "lm"})
    if not args.tiny:  # 4x the rows: the drain at the end (the last rows' long tails) amortised
        more = torch.randint(3, vocab, (4 * rows, plen), generator=g).tolist()
        record("ours refill, 256 slots, 4x rows", lambda: ours_refill(lm, more, sp, 256, chunk),
               4 * rows, warm=lambda: ours_refill(lm, more, sp, 256, chunk))
        record(f"ours refill, 256 slots, fixed block {b}, 4x rows",
               lambda: ours_refill(lm, more, sp, 256, chunk, b, b), 4 * rows,
               warm=lambda: ours_refill(lm, more, sp, 256, chunk, b, b))
        record("ours lockstep, calls of 256, 4x rows",
               lambda: ours_lockstep(lm, more, sp, chunk), 4 * rows)
    fastgen.clear_runners()
    hf_rows = args.hf_rows or (8 if args.tiny else 512)
    if args.skip_hf:
        results["transformers generate_batch, top_k=0"] = {}
    elif lm.device.type == "cuda":  # its CPU warm-up alone takes minutes
        # It drops the repetition penalty ("isn't supported by CB"): a little less work.
        record("transformers generate_batch, top_k=0",
               lambda: hf_generate_batch(lm, prompts[:hf_rows], sp, 0), hf_rows,
               warm=lambda: hf_generate_batch(lm, prompts[:8], sp, 0))
    else:
        results["transformers generate_batch, top_k=0"] = {}
    if not args.skip_hf:
        record("transformers generate, batches of 256, top_k=0",
               lambda: hf_generate(lm, prompts[:chunk], sp, chunk, 0), chunk,
               warm=lambda: hf_generate(lm, prompts[:8], sp, 8, 0))
        record("transformers generate, batches of 256, default top_k (50)",
               lambda: hf_generate(lm, prompts[:chunk], sp, chunk, None), chunk)
    # The 100% of the target: our rate when no row stops early (EOS off, 128 tokens a row).
    lm.model.generation_config.eos_token_id = None
    lm.tokenizer = IdTokenizer()
    for name, fn in (("ours lockstep, no EOS (256 rows)", lambda: ours_lockstep(lm, few, sp, chunk)),
                     ("ours refill, no EOS (256 slots)", lambda: ours_refill(lm, few, sp, chunk, chunk))):
        record(name, fn, chunk, warm=fn)
        fastgen.clear_runners()
    # Roofline of the refill decode step: weights once + the KV positions the attention reads.
    c = lm.model.config
    emb = lm.model.get_input_embeddings().weight
    weights = sum(p.numel() * p.element_size() for p in lm.model.parameters()) - emb.numel() * emb.element_size()
    kv_per_pos = c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads) * 2 * emb.element_size()
    bw = copy_bandwidth(lm)
    step_ms = 1e3 * meter.decode_s / max(1, meter.steps)
    floor_ms = 1e3 * (weights * meter.steps + kv_per_pos * meter.slot_ctx) / bw / max(1, meter.steps)
    prefill_tokens = meter.prefill_rows * plen
    per_token = weights / emb.element_size() - lm.model.lm_head.weight.numel()  # logits: last only
    prefill_floor = 2 * per_token * prefill_tokens / BF16_FLOPS
    no_eos = results["ours lockstep, no EOS (256 rows)"]["useful_tok_s"]
    refill256 = results[f"ours refill, {small} slots"]
    # What no engine beats on this mix: every row prefills its prompt (FLOPs at the measured
    # matrix rate), and each row's tokens + its EOS take one slot-step at the step floor.
    slot_steps = refill256["useful"] + refill256["rows"]
    decode_floor = slot_steps / small * floor_ms / 1e3
    bound = refill256["useful"] / (prefill_floor + decode_floor)
    results["roofline"] = {
        "copy_bandwidth_TBps": bw / 1e12, "weights_GB": weights / 1e9,
        "decode_steps": meter.steps, "decode_s": meter.decode_s, "step_ms": step_ms,
        "step_floor_ms": floor_ms, "step_fraction_of_roofline": floor_ms / step_ms,
        "mean_kv_positions_per_slot": meter.slot_ctx / max(1, meter.steps) / (8 if args.tiny else 256),
        "prefill_s": meter.prefill_s, "prefill_rows": meter.prefill_rows,
        "prefill_floor_s": prefill_floor, "prefill_fraction_of_floor": prefill_floor / max(1e-9, meter.prefill_s),
        "useful_tok_s_bound_on_mix": bound,
        "useful_tok_s_bound_prefill_alone": refill256["useful"] / prefill_floor,
        "refill_vs_no_eos": refill256["useful_tok_s"] / no_eos,
        "refill_vs_generate_batch": refill256["useful_tok_s"] / (results[
            "transformers generate_batch, top_k=0"].get("useful_tok_s") or float("nan")),
    }
    print_table(["engine", "rows", "mean tok", "median", "at cap", "seconds", "useful tok/s"], table)
    print(json.dumps(results["roofline"], indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_refill.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
