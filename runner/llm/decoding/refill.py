"""Continuous refill: a phase's whole work list flows through a fixed number of decoding slots.

Why: the real workload stops rows early (a median of ~20 tokens under a 128 cap), and a
static batch decodes until its longest row ends, its finished rows decoding into discarded
slots. Here a slot whose row stopped takes the next waiting prompt at the end of the block
in which the host saw it stop (8 steps at first, then as many as the mix's early stops make
best, see `block_for`): the rows of many work items
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

import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
import torch

from runner.llm.decoding import fastgen, triton_parts, triton_sampling, triton_support
from runner.llm.decoding.basics import (
    Generation,
    RowStops,
    SamplingParams,
    eos_ids,
    on_device,
    results_of,
    take_rows,
)
from runner.llm.decoding.sampling import Sampler, row_keys
from runner.llm.decoding.slot_runner import SlotRunner
from runner.llm.decoding.static_kv import static_attention
from runner.llm.loading.loader import LoadedModel
from runner.store.batches import row_seed

__all__ = ["BLOCK", "HOST_STEPS", "LONGEST_BLOCK", "PAD_TO", "PREFIX_MIN", "Clock", "Seen",
           "block_for", "steps_for", "stream_refill"]

_log = structlog.get_logger("runner.llm")
# Decode steps between two looks of the host (and refills). A round costs the host's work
# (stop checks, admission, launching) on top of its steps, while a row that stops by EOS or
# a stop string inside a block holds its slot to the block's end. So the block is `BLOCK`
# while nothing is known of the mix, then what the measured rate of such early stops makes
# best (`block_for`), up to `LONGEST_BLOCK`: about 8 steps on the realistic mix of issue 15
# (20 rounds for 167 steps on the H200, as fast as rounds fixed at 8), the whole 48-token cap
# of instruction generation, where rows rarely stop early (1.14-1.18x the phase's tokens/s
# with rounds fixed at 8; 1.61x in generate_responses: fewer, larger admissions;
# bench/RESULTS_issue15.md 1b and 2e).
BLOCK = 8
LONGEST_BLOCK = 64
# One round's host work in decode steps, admission aside (it scales with the rows admitted, not
# the rounds): stop checks, launch and pull took 7.4 ms a round against 1.9 ms a step of a 1B
# model at 256 slots on the H200 (bench/RESULTS_issue15.md 2d, generate_instructions).
HOST_STEPS = 4.0
# The rows of one work item prefilled in one round whose prompts share at least this many
# leading tokens could prefill that prefix once (`SlotRunner._prefill_shared`): the few-shot
# block of a batch drawn with `fewshot_draw: batch`, whose rows differ in their last
# instruction. 0 = off, the default: on the H200 (2026-12-01, bench/RESULTS_issue15.md 2c)
# generate_responses at 4,000 examples took 27.3 s with it (PREFIX_MIN 32) against 17.3 s
# without: a ~110-token block of ~180-token prompts spares prefill FLOPs, but admission is
# bound by launches and host work, not FLOPs (RESULTS_issue15.md 2d), and the split prefill adds
# both (each layer gathers the rows' whole cache rows and rewrites the suffix columns).
# Identical prompts are still prefilled once (a slot holding the prompt lends its KV).
PREFIX_MIN = 0
PAD_TO = 64  # the runner's prompt width is a multiple of this


@dataclass
class _Row:
    item: int
    place: int
    ids: tuple[int, ...]  # rows of one prompt share one tuple (cheap to compare and hash)
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
    longest: int | None = None,
    nucleus: str | None = None,
    prefix_min: int | None = None,
) -> Iterator[tuple[Any, list[Generation]]]:
    """Generate every item's rows through `slots` refilled slots; yield items in order.

    `nucleus`: "bisect" (one Triton kernel on CUDA, the default there), "bisect-eager", or
    "sort" (the default elsewhere; the same draws as `fastgen`'s "topk"). `graphs` defaults
    to CUDA graphs on CUDA and eager steps elsewhere. `block`: the steps of the first
    round and the fewest of any; `longest`: the most (default `LONGEST_BLOCK`;
    `longest=block` keeps every round at `block`). `prefix_min`: the shortest common
    prompt prefix the rows of a round prefill once (0: never). An item that finished in one round is
    yielded while the device runs the next round's steps, so the caller's work on it
    (cleaning, writing, committing) overlaps the decoding. At the end, one `refill_timing`
    log line says where the wall time went (`Clock`).
    """
    if slots < 1:
        raise ValueError(f"slots must be a positive integer, got {slots!r}")
    log = log or _log
    graphs = lm.device.type == "cuda" if graphs is None else graphs
    prefix_min = PREFIX_MIN if prefix_min is None else prefix_min
    st, source = _State(), iter(work)
    occupant: list[_Row | None] = [None] * slots
    compiled = fastgen.wants_compiled(lm, graphs)
    eos = eos_ids(lm)
    runner: SlotRunner | None = None
    clock = Clock()
    done_items = 0
    longest = max(block, LONGEST_BLOCK if longest is None else longest)
    seen = Seen()
    while True:
        with clock("pull"):
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
                    runner = _runner(lm, len(occupant), width, p, graphs, longest, nucleus,
                                     compiled)
                    runner.prompt_of.clear()  # a kept runner's cache may predate this model state
                with clock("admit"):
                    prefilled, saved = _admit(runner, st, occupant, free, lm, eos, p, prefix_min)
                clock.prefilled += prefilled
                clock.prefix_saved += saved
                with clock("launch"):
                    steps = _steps(occupant, seen.block(block, longest), p.max_new_tokens,
                                   block)
                    queued = runner.run_block(steps, log)
            # While the device runs the block: hand the finished items to the caller.
            while done_items in st.items and st.items[done_items].left == 0:
                item = st.items.pop(done_items)
                done_items += 1
                with clock("caller"):
                    yield item.tag, [g for g in item.results if g is not None]
            with clock("device"):
                tokens = queued.tokens()
        except Exception as exc:
            runner = None
            occupant, compiled = _recover(exc, lm, st, occupant, compiled, log)
            continue
        clock.rounds += 1
        clock.steps += steps
        clock.waited += queued.wait_s
        with clock("take"):
            finished = _take(tokens, occupant, st, p.max_new_tokens, seen)
        if not compiled:
            fastgen.count_generated(lm, sum(g.tokens for g in finished))
        if on_rows is not None and finished:
            on_rows(len(finished))
    while done_items in st.items and st.items[done_items].left == 0:
        item = st.items.pop(done_items)
        done_items += 1
        with clock("caller"):
            yield item.tag, [g for g in item.results if g is not None]
    log.info("refill_timing", slots=len(occupant), **clock.summary())


@dataclass
class Seen:
    """What the rounds so far showed of the mix: row-steps decoded, rows stopped early."""

    row_steps: int = 0
    early: int = 0
    rounds: int = 0

    def block(self, shortest: int, longest: int) -> int:
        """The next round's longest block: `shortest` until a round has been seen."""
        if not self.rounds:
            return shortest
        return block_for(self.early / max(self.row_steps, 1), shortest, longest)


def block_for(early_rate: float, shortest: int, longest: int,
              host_steps: float = HOST_STEPS) -> int:
    """The block that decodes the most useful tokens a second when each running row stops
    early (EOS, a stop string) with probability `early_rate` a step and a round's host work
    costs `host_steps` steps. A round of n steps costs (host_steps + n) steps and loses about
    rate * n * n / 2 of its n row-steps to rows idling after their stop; the best n solves
    rate * n^2 / 2 + rate * host_steps * n = host_steps."""
    if early_rate <= 0:
        return longest
    q, h = early_rate, host_steps
    best = (-q * h + math.sqrt(q * q * h * h + 2 * q * h)) / q
    return max(shortest, min(longest, round(best)))


class Clock:
    """Wall seconds of the refill loop by part: `pull` (the caller's work list: building and
    tokenising prompts), `admit` (admission tensors, prefill launches, token 0), `launch`
    (queueing a block), `device` (waiting for its tokens: the device's work the host did not
    hide), `take` (stops and bookkeeping), `caller` (the caller's work on yielded items)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.rounds = self.steps = self.prefilled = self.prefix_saved = 0
        self.waited = 0.0
        self._started = time.perf_counter()

    @contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - started

    def summary(self) -> dict[str, Any]:
        """The log line's fields: seconds per part, the total, and the round counts."""
        out: dict[str, Any] = {f"{k}_s": round(v, 3) for k, v in sorted(self.seconds.items())}
        out.update(total_s=round(time.perf_counter() - self._started, 3),
                   device_wait_s=round(self.waited, 3), rounds=self.rounds, steps=self.steps,
                   prefilled_rows=self.prefilled, prefix_tokens_saved=self.prefix_saved)
        return out


def steps_for(left: list[int], block: int, shortest: int) -> int:
    """Decode steps for a round whose running rows may each take `left` more tokens: at most
    `block`, ending where the first row reaches its cap when that is at least `shortest`
    steps away (its slot then refills at once), never past the last row's end."""
    if not left:
        return 0
    return min(block, max(min(shortest, block), min(left)), max(left))


def _pull(st: _State, source: Iterator[tuple[Any, list[list[int]], int]]) -> None:
    try:
        tag, prompts, seed = next(source)
    except StopIteration:
        st.exhausted = True
        return
    n = st.pulled
    st.pulled += 1
    st.items[n] = _Item(tag, [None] * len(prompts), len(prompts))
    shared: dict[tuple[int, ...], tuple[int, ...]] = {}
    for i, ids in enumerate(prompts):
        key = tuple(ids)
        st.queue.append(_Row(n, i, shared.setdefault(key, key), seed))


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
           lm: LoadedModel, eos: set[int], p: SamplingParams, prefix_min: int
           ) -> tuple[int, int]:
    """Prefill waiting rows (in order, while they fit the width) into the free slots;
    return how many rows were prefilled (the others copied a slot holding their prompt) and
    how many prompt tokens a shared prefix spared them."""
    taken: list[_Row] = []
    while len(taken) < len(free) and st.queue and len(st.queue[0].ids) <= runner.width:
        taken.append(st.queue.popleft())
    if not taken:
        return 0, 0
    # A row goes to a free slot that already holds its prompt where there is one (nothing to
    # prefill or copy), the others to the remaining free slots in order.
    holding: dict[tuple[int, ...], list[int]] = {}
    for slot in free:
        if slot in runner.prompt_of:
            holding.setdefault(runner.prompt_of[slot], []).append(slot)
    placed: list[int | None] = []
    for row in taken:
        held = holding.get(row.ids)
        placed.append(held.pop(0) if held else None)
    used = {slot for slot in placed if slot is not None}
    rest = iter(slot for slot in free if slot not in used)
    chosen = [(slot if slot is not None else next(rest), row) for slot, row in zip(placed, taken)]
    ids, mask = _prompt_tensors([r for _, r in chosen], runner.width, lm)
    rows = [r for _, r in chosen]
    keys = row_keys([row_seed(r.seed, r.place) for r in rows], lm.device)
    for slot, row in chosen:  # occupants first: if the prefill fails, `_recover` requeues them
        row.stops = RowStops(lm.tokenizer, eos, 1, p.stop_strings)
        row.fresh = True
        occupant[slot] = row
    sources = _sources(runner, chosen)
    # The rows to prefill, by work item: the rows of a batch drawn with `fewshot_draw: batch`
    # share its few-shot block, whichever other batches' rows a round admits with them.
    by_item: dict[int, list[_Row]] = {}
    for (_, row), src in zip(chosen, sources):
        if src is None:
            by_item.setdefault(row.item, []).append(row)
    prefix_of = {item: _common_prefix(rows, prefix_min) for item, rows in by_item.items()}
    prefixes = [prefix_of[row.item] if src is None else ()
                for (_, row), src in zip(chosen, sources)]
    runner.admit([s for s, _ in chosen], ids, mask, keys, sources, prefixes=prefixes)
    spared = sum(len(prefix_of[i]) * (len(rows) - 1) for i, rows in by_item.items()
                 if prefix_of[i])
    return sum(len(rows) for rows in by_item.values()), spared


def _common_prefix(rows: list[_Row], shortest: int) -> tuple[int, ...]:
    """The leading tokens the prompts of `rows` share (at least `shortest` of them, and one
    fewer than the shortest prompt, so that every row has a suffix); () if none such."""
    prompts = list({r.ids: None for r in rows})
    if shortest < 1 or len(prompts) < 2:
        return ()
    low, high = min(prompts), max(prompts)  # what every prompt shares, these two share
    n = next((k for k, (a, b) in enumerate(zip(low, high)) if a != b), min(len(low), len(high)))
    n = min(n, min(len(x) for x in prompts) - 1)
    return low[:n] if n >= shortest else ()


def _prompt_tensors(rows: list[_Row], width: int, lm: LoadedModel
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' prompts left-padded to `width`, and their masks, on the model's device:
    built once per distinct prompt (rows of a batch often share one) and gathered."""
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    distinct: dict[tuple[int, ...], int] = {}
    index = [distinct.setdefault(r.ids, len(distinct)) for r in rows]
    prompts = list(distinct)
    ids = torch.tensor([[pad] * (width - len(x)) + list(x) for x in prompts])
    lengths = torch.tensor([len(x) for x in prompts])
    mask = (torch.arange(width)[None, :] >= width - lengths[:, None]).long()
    if len(prompts) < len(rows):
        at = torch.tensor(index)
        ids, mask = ids[at], mask[at]
    return ids.to(lm.device), mask.to(lm.device)


def _sources(runner: SlotRunner, chosen: list[tuple[int, _Row]]) -> list[int | None]:
    """Per admitted row, a slot whose cache holds the same prompt (else None: prefill it)."""
    for slot, row in chosen:  # a slot loaded with another prompt no longer holds its old one
        if runner.prompt_of.get(slot) != row.ids:
            runner.prompt_of.pop(slot, None)
    holder = {prompt: slot for slot, prompt in runner.prompt_of.items()}
    sources: list[int | None] = []
    for slot, row in chosen:
        prompt = row.ids
        sources.append(holder.get(prompt))
        holder.setdefault(prompt, slot)
        runner.prompt_of[slot] = prompt
    return sources


def _steps(occupant: list[_Row | None], block: int, max_new: int, shortest: int) -> int:
    """This round's decode steps (`steps_for`) from the rows' tokens still allowed."""
    left = [max_new - len(row.stops.out[0]) - (1 if row.fresh else 0)
            for row in occupant if row is not None and row.stops is not None]
    return steps_for(left, block, shortest)


def _take(tokens: list[list[int]], occupant: list[_Row | None], st: _State,
          max_new: int, seen: Seen | None = None) -> list[Generation]:
    """Hand each row its new tokens; free the slots of rows that stopped; count in `seen`
    the row-steps decoded and the rows that stopped before `max_new`."""
    held = [(slot, row, row.stops) for slot, row in enumerate(occupant)
            if row is not None and row.stops is not None]
    blocks = []
    for slot, row, stops in held:
        new = tokens[slot] if row.fresh else tokens[slot][1:]
        row.fresh = False
        blocks.append(new[: max_new - len(stops.out[0])])
    before = sum(len(stops.out[0]) for _, _, stops in held)
    take_rows([(stops, 0) for _, _, stops in held], blocks)  # one decode call for the round
    done = [(slot, row, stops) for slot, row, stops in held
            if stops.how[0] is not None or len(stops.out[0]) >= max_new]
    if seen is not None:
        seen.rounds += 1
        seen.row_steps += sum(len(stops.out[0]) for _, _, stops in held) - before
        seen.early += sum(1 for _, _, stops in done
                          if stops.how[0] is not None and len(stops.out[0]) < max_new)
    finished = results_of([(stops, 0) for _, _, stops in done])
    for (slot, row, _), gen in zip(done, finished):
        item = st.items[row.item]
        item.results[row.place] = gen
        item.left -= 1
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
