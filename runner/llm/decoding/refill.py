"""Continuous refill: a phase's whole work list flows through a fixed number of decoding slots.

Why: the real workload stops rows early (a median of ~20 tokens under a 128 cap), and a
static batch decodes until its longest row ends, its finished rows decoding into discarded
slots. Here a slot whose row stopped takes the next waiting prompt at the end of the block
in which the host saw it stop (`block` steps, 8 by default): the rows of many work items
(a phase's `ctx.batches` batches) share the slots, and the decode steps are spent on rows
that still run.

The caller hands `stream` an iterable of work items `(tag, prompts, seed)` and gets back
`(tag, generations)` for each item, in the items' order, as soon as every row of the item and
of every item before it has finished. So a phase commits each batch once, in index order,
and a crash loses only the batches not yet yielded. Items are pulled lazily, only as slots
need rows, so the work list may be a generator that builds prompts as it goes.

Row `i` of an item with seed `s` samples with key `row_seed(s, i)` at its own step, so its
tokens depend only on (s, i) and the runner's prompt width: not on its slot, its neighbours
or when it was admitted (what `tests/llm/decoding/test_refill.py` checks against a run of one
row at a time). The prompt width is the longest waiting prompt, rounded up to 64, when the
runner is made; a longer prompt waits until the slots drain, then a wider runner is made.
On CUDA out of memory the slots are halved (logged as `oom_split`) and the rows in flight
start again (their tokens are a function of their seeds, so nothing changes), down to one
slot. The host's rules for a row's end are `basics.RowStops`'s: EOS (not kept), a stop
string (kept), or `max_new_tokens`.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
import torch

from runner.llm.decoding import fastgen, triton_parts, triton_sampling, triton_support
from runner.llm.decoding.basics import Generation, RowStops, SamplingParams, eos_ids, on_device
from runner.llm.decoding.sampling import Sampler, row_keys
from runner.llm.decoding.slot_runner import SlotRunner
from runner.llm.decoding.static_kv import static_attention
from runner.llm.loading.loader import LoadedModel
from runner.store.batches import row_seed

__all__ = ["BLOCK", "PAD_TO", "stream_refill"]

_log = structlog.get_logger("runner.llm")
BLOCK = 8  # decode steps between two looks of the host (and refills)
PAD_TO = 64  # the runner's prompt width is a multiple of this


@dataclass
class _Row:
    item: int
    place: int
    ids: list[int]
    seed: int
    stops: RowStops | None = None
    fresh: bool = False  # admitted since the last block: its token 0 is in row 0


@dataclass
class _Item:
    tag: Any
    results: list[Generation | None]
    left: int


@dataclass
class _State:
    queue: deque[_Row] = field(default_factory=deque)
    items: dict[int, _Item] = field(default_factory=dict)
    pulled: int = 0
    exhausted: bool = False


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError)


def stream_refill(
    lm: LoadedModel,
    work: Iterable[tuple[Any, list[list[int]], int]],
    p: SamplingParams,
    slots: int,
    *,
    log: Any = None,
    on_rows: Callable[[int], None] | None = None,
    graphs: bool | None = None,
    block: int = BLOCK,
    nucleus: str | None = None,
) -> Iterator[tuple[Any, list[Generation]]]:
    """Generate every item's rows through `slots` refilled slots; yield items in order.

    `nucleus`: "bisect" (one Triton kernel on CUDA, the default there), "bisect-eager", or
    "sort" (the default elsewhere; the same draws as `fastgen`'s "topk"). `graphs` defaults
    to CUDA graphs on CUDA and eager steps elsewhere.
    """
    if slots < 1:
        raise ValueError(f"slots must be a positive integer, got {slots!r}")
    log = log or _log
    graphs = lm.device.type == "cuda" if graphs is None else graphs
    st, source = _State(), iter(work)
    occupant: list[_Row | None] = [None] * slots
    compiled = fastgen.wants_compiled(lm, graphs)
    eos = eos_ids(lm)
    runner: SlotRunner | None = None
    done_items = 0
    while True:
        free = [s for s, row in enumerate(occupant) if row is None]
        while not st.exhausted and len(st.queue) < len(free):
            _pull(st, source)
        active = len(occupant) - len(free)
        if not active and not st.queue:
            break
        try:
            with on_device(lm.device), static_attention(lm.model), \
                    fastgen.parts_switched_on(lm, compiled):
                if runner is None or (not active and len(st.queue[0].ids) > runner.width):
                    width = max(len(r.ids) for r in st.queue)
                    runner = _runner(lm, len(occupant), width, p, graphs, block, nucleus,
                                     compiled)
                    runner.prompt_of.clear()  # a kept runner's cache may predate this model state
                _admit(runner, st, occupant, free, lm, eos, p)
                tokens = runner.run_block(_steps(occupant, block, p.max_new_tokens), log)
        except Exception as exc:
            runner = None
            occupant, compiled = _recover(exc, lm, st, occupant, compiled, log)
            continue
        finished = _take(tokens, occupant, st, p.max_new_tokens)
        if not compiled:
            fastgen.count_generated(lm, sum(g.tokens for g in finished))
        if on_rows is not None and finished:
            on_rows(len(finished))
        while done_items in st.items and st.items[done_items].left == 0:
            item = st.items.pop(done_items)
            done_items += 1
            yield item.tag, [g for g in item.results if g is not None]


def _pull(st: _State, source: Iterator[tuple[Any, list[list[int]], int]]) -> None:
    try:
        tag, prompts, seed = next(source)
    except StopIteration:
        st.exhausted = True
        return
    n = st.pulled
    st.pulled += 1
    st.items[n] = _Item(tag, [None] * len(prompts), len(prompts))
    st.queue.extend(_Row(n, i, list(ids), seed) for i, ids in enumerate(prompts))


def _runner(lm: LoadedModel, slots: int, width: int, p: SamplingParams, graphs: bool,
            block: int, nucleus: str | None, compiled: bool) -> SlotRunner:
    if nucleus is None:
        nucleus = "bisect" if triton_sampling.available(lm.device) else "sort"
    if nucleus not in ("bisect", "bisect-eager", "sort"):
        raise ValueError(f"unknown nucleus search {nucleus!r}")
    fused = nucleus == "bisect" and triton_sampling.available(lm.device)
    sampler = Sampler(p.temperature, p.top_p, p.repetition_penalty, 1024,
                      "topk" if nucleus == "sort" else "bisect", fused)
    variant = sampler.first_variant()
    variant = "sort" if variant == "topk" else variant
    penalise = p.repetition_penalty != 1.0
    width = -(-width // PAD_TO) * PAD_TO
    key = ("refill", weakref.ref(lm.model), slots, width, p.max_new_tokens, sampler,
           variant, penalise, graphs, block, compiled, triton_parts.ENABLED)
    runner: SlotRunner = fastgen.kept_runner(key, lm.model, lambda: SlotRunner(
        lm.model, slots, width, p.max_new_tokens, sampler, variant, penalise, graphs, block))
    return runner


def _admit(runner: SlotRunner, st: _State, occupant: list[_Row | None], free: list[int],
           lm: LoadedModel, eos: set[int], p: SamplingParams) -> None:
    """Prefill waiting rows (in order, while they fit the width) into the free slots."""
    taken: list[_Row] = []
    while len(taken) < len(free) and st.queue and len(st.queue[0].ids) <= runner.width:
        taken.append(st.queue.popleft())
    if not taken:
        return
    # A row goes to a free slot that already holds its prompt where there is one (nothing to
    # prefill or copy), the others to the remaining free slots in order.
    holding: dict[tuple[int, ...], list[int]] = {}
    for slot in free:
        if slot in runner.prompt_of:
            holding.setdefault(runner.prompt_of[slot], []).append(slot)
    placed: list[int | None] = []
    for row in taken:
        held = holding.get(tuple(row.ids))
        placed.append(held.pop(0) if held else None)
    used = {slot for slot in placed if slot is not None}
    rest = iter(slot for slot in free if slot not in used)
    chosen = [(slot if slot is not None else next(rest), row) for slot, row in zip(placed, taken)]
    width = runner.width
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    rows = [r for _, r in chosen]
    ids = torch.tensor([[pad] * (width - len(r.ids)) + r.ids for r in rows], device=lm.device)
    mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in rows],
                        device=lm.device)
    keys = row_keys([row_seed(r.seed, r.place) for r in rows], lm.device)
    for slot, row in chosen:  # occupants first: if the prefill fails, `_recover` requeues them
        row.stops = RowStops(lm.tokenizer, eos, 1, p.stop_strings)
        row.fresh = True
        occupant[slot] = row
    runner.admit([s for s, _ in chosen], ids, mask, keys, _sources(runner, chosen))


def _sources(runner: SlotRunner, chosen: list[tuple[int, _Row]]) -> list[int | None]:
    """Per admitted row, a slot whose cache holds the same prompt (else None: prefill it)."""
    for slot, row in chosen:  # a slot loaded with another prompt no longer holds its old one
        if runner.prompt_of.get(slot) != tuple(row.ids):
            runner.prompt_of.pop(slot, None)
    holder = {prompt: slot for slot, prompt in runner.prompt_of.items()}
    sources: list[int | None] = []
    for slot, row in chosen:
        prompt = tuple(row.ids)
        sources.append(holder.get(prompt))
        holder.setdefault(prompt, slot)
        runner.prompt_of[slot] = prompt
    return sources


def _steps(occupant: list[_Row | None], block: int, max_new: int) -> int:
    """Decode steps for this round: `block`, or fewer when every row ends sooner."""
    need = 0
    for row in occupant:
        if row is not None and row.stops is not None:
            have = len(row.stops.out[0]) + (1 if row.fresh else 0)
            need = max(need, max_new - have)
    return min(block, need)


def _take(tokens: list[list[int]], occupant: list[_Row | None], st: _State,
          max_new: int) -> list[Generation]:
    """Hand each row its new tokens; free the slots of rows that stopped."""
    finished = []
    for slot, row in enumerate(occupant):
        if row is None or row.stops is None:
            continue
        new = tokens[slot] if row.fresh else tokens[slot][1:]
        row.fresh = False
        have = len(row.stops.out[0])
        row.stops.take([new[: max_new - have]])
        if row.stops.done() or len(row.stops.out[0]) >= max_new:
            gen = row.stops.results()[0]
            item = st.items[row.item]
            item.results[row.place] = gen
            item.left -= 1
            finished.append(gen)
            occupant[slot] = None
    return finished


def _recover(exc: Exception, lm: LoadedModel, st: _State, occupant: list[_Row | None],
             compiled: bool, log: Any) -> tuple[list[_Row | None], bool]:
    """After an error inside a round: (the slots to go on with, compiled), the rows in flight
    queued again; re-raises what cannot be helped (OOM at one slot, or an error with nothing
    left to switch off)."""
    fastgen.clear_runners()
    slots = len(occupant)
    if _is_oom(exc):
        if slots == 1:
            raise exc
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("oom_split", rows=slots, into=[slots // 2, slots - slots // 2])
        slots //= 2
    elif compiled:
        fastgen.compile_failed(lm, exc, log)
        compiled = False
    elif triton_support.available(lm.device):
        triton_support.switch_off(exc, log)
    else:
        raise exc
    # The rows in flight start again from their prompts, ahead of the rows still waiting and
    # in their original order: their tokens depend on their seeds alone.
    again = sorted((r for r in occupant if r is not None), key=lambda r: (r.item, r.place))
    for row in reversed(again):
        row.stops, row.fresh = None, False
        st.queue.appendleft(row)
    return [None] * slots, compiled
