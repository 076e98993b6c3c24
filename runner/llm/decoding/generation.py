"""Batched, seeded sampling from a base model with per-row stops.

Our own decoding loop over the model's KV cache rather than `model.generate`, for two
reasons: sampling must draw from generators *we* seed (one per row, from the batch seed and
the row's place in the batch), so a resumed batch, or a batch split in two after a CUDA
out-of-memory error, samples exactly the same tokens; and each row must stop at EOS or at
any stop string, which we detect by decoding only the tail of the row each step.

The loop matches `model.generate` where both apply: left padding, position ids from the
attention mask's cumulative sum, greedy = argmax when `temperature == 0` (a test checks it
token for token), and the same repetition-penalty and nucleus (top-p) rules as the
transformers logits processors.

This file's loop is the simple one, used on CPU: one eager forward and one host round trip
per token. On CUDA, `generate` runs the fast loop of `fastgen.py` instead (static KV cache,
each decode step one CUDA graph, sampling on the device, stops checked every 16 steps), with
the same contract: greedy output token for token, stop strings and EOS cut at the same token,
a row's draws a function of (batch seed, row) alone. Its draws come from a counter-based
hash, not from these torch generators, so a sampled row differs between the two loops (as it
does between CPU and GPU numerics anyway). `engine_for` says which loop runs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import structlog
import torch

from runner.environment import ENGINES
from runner.llm.decoding import fastgen, refill
from runner.llm.decoding.basics import (
    Generation,
    SamplingParams,
    StopChecker,
    eos_ids,
    forward_params,
    on_device,
)
from runner.llm.decoding.static_kv import supported
from runner.llm.loading.loader import LoadedModel
from runner.store.batches import row_seed

__all__ = ["ENGINE_ENV", "Generation", "SamplingParams", "StopChecker", "engine_for", "eos_ids",
           "forward_params", "generate", "on_device", "stream"]

ENGINE_ENV = "RUNNER_GENERATION"  # "simple" | "static" | "auto" (default): see engine_for

_log = structlog.get_logger("runner.llm")


def _forward(model: Any, cache: Any, **inputs: Any) -> tuple[torch.Tensor, Any]:
    # transformers renamed `past_key_values` to `cache`; speak whichever this version takes.
    params = forward_params(type(model))
    key = "cache" if "cache" in params else "past_key_values"
    if cache is not None:
        inputs[key] = cache
    if "logits_to_keep" in params:
        inputs["logits_to_keep"] = 1  # only the last position is ever sampled from
    out = model(use_cache=True, **inputs)
    new_cache = out.get("cache") if "cache" in out else out.get("past_key_values")
    return out.logits[:, -1, :].float(), new_cache


def _pick(
    logits: torch.Tensor,
    seen: torch.Tensor | None,
    p: SamplingParams,
    gens: list[torch.Generator],
) -> torch.Tensor:
    if seen is not None:  # tokens of the prompt or output so far, as transformers does
        penalised = torch.where(logits < 0, logits * p.repetition_penalty,
                                logits / p.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if p.temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / p.temperature
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum <= (1 - p.top_p)
        drop[..., -1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(gens)])


@torch.inference_mode()
def _generate_chunk(
    lm: LoadedModel, rows: list[list[int]], places: list[int], p: SamplingParams, seed: int
) -> list[Generation]:
    tok, device = lm.tokenizer, lm.device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    gens = [torch.Generator(device=device).manual_seed(row_seed(seed, i)) for i in places]
    eos = eos_ids(lm)
    stopper = StopChecker(tok, p.stop_strings)
    out: list[list[int]] = [[] for _ in rows]
    stopped: list[str | None] = [None] * len(rows)
    logits, cache = _forward(lm.model, None, input_ids=ids, attention_mask=mask, position_ids=pos)
    seen: torch.Tensor | None = None
    if p.repetition_penalty != 1.0:
        counts = torch.zeros(logits.shape, dtype=torch.long, device=device)
        seen = counts.scatter_add_(1, ids, mask.long()) > 0
    for step in range(p.max_new_tokens):
        nxt = _pick(logits, seen, p, gens)
        chosen = nxt.tolist()
        for i, t in enumerate(chosen):
            if stopped[i] is not None:
                continue
            if t in eos:
                stopped[i] = "eos"
                continue
            out[i].append(t)
            if stopper.hit(out[i]):
                stopped[i] = "stop_string"
        if all(s is not None for s in stopped) or step == p.max_new_tokens - 1:
            break
        nxt = torch.tensor([t if s is None else pad for t, s in zip(chosen, stopped)],
                           device=device)
        if seen is not None:
            seen[torch.arange(len(rows), device=device), nxt] = True
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        pos = pos[:, -1:] + 1
        logits, cache = _forward(lm.model, cache, input_ids=nxt[:, None], attention_mask=mask,
                                 position_ids=pos)
    result = []
    for ids_i, how in zip(out, stopped):
        how = how or "max_new_tokens"
        text = tok.decode(ids_i, skip_special_tokens=False)
        result.append(Generation(text, len(ids_i), how == "max_new_tokens", how, tuple(ids_i)))
    return result


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom)


def engine_for(lm: LoadedModel, engine: str = "auto") -> str:
    """Which loop runs: "static" (fastgen: static cache, CUDA graphs) or "simple" (this file).

    "auto" (the default, or `$RUNNER_GENERATION`) picks "static" on CUDA for the model
    families `static_kv.supported` reproduces exactly, else "simple": the CPU path stays this
    simple one. "static" on CPU runs the fast loop's steps eagerly (what its tests check).
    """
    if engine == "auto":
        engine = (os.environ.get(ENGINE_ENV) or "auto").strip().lower()
    if engine not in ENGINES:
        raise ValueError(f"generation engine must be auto, simple or static, got {engine!r}")
    if engine == "auto":
        engine = "static" if lm.device.type == "cuda" and supported(lm.model) else "simple"
    return engine


def generate(
    lm: LoadedModel,
    token_ids: list[list[int]],
    params: SamplingParams,
    seed: int,
    on_rows: Callable[[int], None] | None = None,
    log: Any = None,
    *,
    engine: str = "auto",
) -> list[Generation]:
    """Continue each prompt (token ids, BOS policy applied) and return one Generation each.

    Row `i` samples from a stream seeded by (seed, i), so the result is independent of
    how the rows are chunked. On CUDA out-of-memory a chunk is retried as two halves
    (logged as `oom_split`) down to single rows. `engine`: see `engine_for`.
    """
    log = log or _log
    chunk_fn: Callable[..., list[Generation]] = _generate_chunk
    if engine_for(lm, engine) == "static":
        chunk_fn = functools.partial(fastgen.generate_static, log=log)
    results: list[Generation | None] = [None] * len(token_ids)
    todo: list[list[int]] = [list(range(len(token_ids)))] if token_ids else []
    while todo:
        places = todo.pop(0)
        try:
            chunk = chunk_fn(lm, [token_ids[i] for i in places], places, params, seed)
        except Exception as exc:
            if not _is_oom(exc) or len(places) == 1:
                raise
            _free_memory()
            half = len(places) // 2
            log.warning("oom_split", rows=len(places), into=[half, len(places) - half])
            todo[:0] = [places[:half], places[half:]]
            continue
        for i, g in zip(places, chunk):
            results[i] = g
        if on_rows is not None:
            on_rows(len(places))
    return [g for g in results if g is not None]


def stream(
    lm: LoadedModel,
    work: Iterable[tuple[Any, list[list[int]], int]],
    params: SamplingParams,
    slots: int,
    on_rows: Callable[[int], None] | None = None,
    log: Any = None,
    *,
    engine: str = "auto",
) -> Iterator[tuple[Any, list[Generation]]]:
    """Generate a whole work list: `(tag, prompts, seed)` items in, `(tag, generations)` out,
    in the items' order, each item as soon as it and every item before it has finished.

    The static engine keeps `slots` rows decoding and refills a slot as soon as its row stops
    (`refill.stream_refill`), so rows of several items share the slots; the simple loop runs
    the items one after another. Either way an item's generations are those `generate(lm,
    prompts, params, seed)` gives: row i depends only on (seed, i).
    """
    if engine_for(lm, engine) == "static":
        yield from refill.stream_refill(lm, work, params, slots, log=log or _log,
                                        on_rows=on_rows)
        return
    for tag, rows, seed in work:
        yield tag, generate(lm, rows, params, seed, on_rows, log, engine="simple")


def _free_memory() -> None:
    # The fast loop keeps its cache and graphs for the next call; after an OOM they must go.
    fastgen.clear_runners()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
