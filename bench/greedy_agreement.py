"""Greedy output against `model.generate`, and how far `model.generate` agrees with itself.

Issue 5 asks that our greedy rows equal `model.generate(do_sample=False)` token for token. In
float32 they do. In bf16 a row can part at a near-tie: two tokens whose logits lie within a
rounding step or two, where the order in which a kernel adds things decides the winner. That
is not ours alone: transformers' own greedy output changes in bf16 when only the batch around
a row changes (matmul and attention kernels are chosen by shape, so a row's sums are added in
a different order), or when it uses its own static cache. So next to ours, this measures
`model.generate` against itself on the same prompts:

* `ours`: `generate(engine="static")` on the left-padded batch;
* `generate, each row alone`: `model.generate` on every prompt by itself (batch 1, no padding);
* `generate, static cache`: `model.generate(cache_implementation="static")` on the batch
  (not compiled: `disable_compile=True`);

each against the reference, `model.generate` (dynamic cache) on the left-padded batch. For
every row that parts, the model's own unpadded forward on the reference's prefix gives the
two tokens' logit gap, next to the rounding step of the dtype at that size.

Run (device): python bench/greedy_agreement.py   (bench_generation.py calls `report`)
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

import torch
from _llm import build

from runner.llm.decoding.generation import SamplingParams, generate

__all__ = ["agreement", "report"]


def _prompts(rows: int, longest: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(99)
    ids = torch.randint(1, vocab, (rows, longest), generator=g).tolist()
    return [p[: longest - 7 * i] for i, p in enumerate(ids)]  # lengths differ: left padding


def _hf_generate(lm, batch: list[list[int]], new: int, **kw) -> list[list[int]]:
    """model.generate's greedy continuations of `batch`, left padded with id 0."""
    longest = max(len(r) for r in batch)
    ids = torch.tensor([[0] * (longest - len(r)) + r for r in batch], device=lm.device)
    mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in batch],
                        device=lm.device)
    with torch.inference_mode():
        out = lm.model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=new,
                                pad_token_id=0, **kw)
    return out[:, longest:].tolist()


def _ours(lm, batch: list[list[int]], new: int) -> list[list[int]]:
    out = generate(lm, batch, SamplingParams(temperature=0, max_new_tokens=new), 0,
                   engine="static")
    return [list(g.token_ids) for g in out]


def _alone(lm, batch: list[list[int]], new: int) -> list[list[int]]:
    return [_hf_generate(lm, [row], new)[0] for row in batch]


def _static(lm, batch: list[list[int]], new: int) -> list[list[int]]:
    return _hf_generate(lm, batch, new, cache_implementation="static", disable_compile=True)


def agreement(rows: list[list[int]], ref: list[list[int]]) -> list[int]:
    """Per row, the length of the prefix it shares with the reference row."""
    return [next((k for k, (a, b) in enumerate(zip(r, f)) if a != b), min(len(r), len(f)))
            for r, f in zip(rows, ref)]


def _gap(lm, context: list[int], theirs: int, ours: int) -> str:
    """The model's own logits (unpadded forward) for the two tokens where the rows part."""
    with torch.inference_mode():
        logits = lm.model(torch.tensor([context], device=lm.device)).logits[0, -1].float()
    a, b = logits[theirs].item(), logits[ours].item()
    # The spacing of representable values at |a| in the model's dtype (8 mantissa bits: bf16).
    step = torch.finfo(lm.dtype).eps * 2.0 ** torch.tensor(abs(a)).log2().floor().item()
    return f"{abs(a - b):.3f} ({step:.3f})"


CANDIDATES: dict[str, Callable] = {"ours": _ours, "generate, each row alone": _alone,
                                   "generate, static cache": _static}


def report(lm, rows: int = 8, longest: int = 256, new: int = 64) -> list[str]:
    """One line per candidate: rows equal to the reference, mean agreeing prefix, gaps."""
    batch = _prompts(rows, longest, lm.model.config.vocab_size)
    ref = _hf_generate(lm, batch, new)
    dtype = str(lm.dtype).removeprefix("torch.")
    lines = []
    for name, run in CANDIDATES.items():
        got = run(lm, batch, new)
        prefix = agreement(got, ref)
        gaps = [_gap(lm, row + r[:k], r[k], g[k])
                for row, r, g, k in zip(batch, ref, got, prefix) if k < new]
        lines.append(f"{dtype}, {name} vs generate on the {rows}-row left-padded batch: "
                     f"{prefix.count(new)}/{rows} rows identical over {new} tokens, mean "
                     f"agreeing prefix {sum(prefix) / rows:.1f}" + (
                         "; logit gap at each first difference (rounding step): "
                         + ", ".join(gaps) if gaps else ""))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small float32 model on CPU (smoke)")
    ap.add_argument("--float32", action="store_true", help="also run with the model in float32")
    args = ap.parse_args()
    lm, _ = build(args.tiny)
    longest = 64 if args.tiny else 256
    for line in report(lm, longest=longest):
        print(line)
    if args.float32 and lm.dtype != torch.float32:
        lm.model.float()
        for line in report(dataclasses.replace(lm, dtype=torch.float32), longest=longest):
            print(line)


if __name__ == "__main__":
    main()
