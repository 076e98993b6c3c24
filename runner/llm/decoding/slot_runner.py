"""The device side of continuous refill: a fixed number of slots, each decoding its own row.

`step_runner.Runner` decodes one batch in lockstep: every row is at the same step, so a
finished row keeps its slot until the batch's longest row ends. Here each slot carries its
own step counter (`step`, one per slot), prompt mask, position base, sampling key and
repetition-penalty ids, so a slot whose row stopped takes the next prompt at once (`admit`:
prefill that prompt into the slot's rows of the cache and sample its token 0) while the other
slots go on. A decode step (`_body`) is the same for every slot: feed the slot's last token
at cache position `width + step - 1`, sample token `step` with the row's key at its own
step, advance. It reads and writes only fixed-address buffers, so on CUDA it is captured once
as a CUDA graph and replayed (`run_steps`).

What a row computes depends on its prompt, key and the runner's prompt width alone, never
on which slot it sits in or what the other slots hold: attention is per row, the KV cache
positions past the row's current step are masked (stale entries of an earlier occupant are
never read), and sampling keys are per row with per-row steps. A slot whose row has stopped
(the host only learns it at a block's end) decodes on into positions it will overwrite;
its step saturates at `max_new`, so every write stays inside the buffers.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import structlog
import torch

from runner.llm.decoding.sampling import Sampler
from runner.llm.decoding.static_kv import StaticKV, model_step, prefill_mask

__all__ = ["Block", "PrefixKV", "SlotKV", "SlotRunner"]

_log = structlog.get_logger("runner.llm")


class SlotKV(StaticKV):
    """The static cache, written per slot: a decode step writes each slot at its own
    position (`slots`, one per row); a prefill (`rows` set) writes its rows' prompt slots and
    attends over the prompt alone."""

    rows: torch.Tensor | None = None
    # A suffix prefill (`SlotRunner._prefill_shared`): the first cache position of the rows'
    # last columns, and which of those columns each row writes (its suffix; the others hold
    # the copied prefix or padding, and stay as they are).
    suffix: tuple[int, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.rows is not None and self.suffix is not None:
            start, write = self.suffix
            stop = start + key_states.shape[2]
            into = write[:, None, :, None]
            for cache, new in ((keys, key_states), (values, value_states)):
                cache[self.rows, :, start:stop] = torch.where(
                    into, new, cache[self.rows, :, start:stop])
            # The queries attend over the rows' whole prompts: prefix and suffix.
            return keys[self.rows, :, :stop], values[self.rows, :, :stop]
        if self.rows is not None:  # prefill of the admitted rows: (n, heads, width, dim)
            width = key_states.shape[2]
            keys[self.rows, :, :width] = key_states
            values[self.rows, :, :width] = value_states
            return key_states, value_states
        b, h, _, d = key_states.shape
        where = self.slots.view(b, 1, 1, 1).expand(b, h, 1, d)
        keys.scatter_(2, where, key_states)
        values.scatter_(2, where, value_states)
        return keys, values


class PrefixKV:
    """A one-row cache for a shared prefix's prefill: each layer's keys and values as the
    model computed them, attended over as they are."""

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys[layer_idx], self.values[layer_idx] = key_states, value_states
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # only read when position ids are not given; we always give them


class Block:
    """A round queued on the device: `tokens()` waits for its copy to the host."""

    def __init__(self, runner: SlotRunner, n: int) -> None:
        self.runner, self.n = runner, n
        self.wait_s = 0.0  # seconds `tokens()` blocked on the device (0 when eager)

    def tokens(self) -> list[list[int]]:
        """Per slot, the tokens of this round (see `SlotRunner.run_block`)."""
        runner = self.runner
        if runner.copied is not None:
            started = time.perf_counter()
            runner.copied.synchronize()
            self.wait_s = time.perf_counter() - started
        return runner.host_out[: self.n + 1].T.tolist()


class SlotRunner:
    """Static buffers, cache and step graph for (slots, prompt width, max_new, sampler)."""

    def __init__(self, model: Any, slots: int, width: int, max_new: int, sampler: Sampler,
                 variant: str, penalise: bool, graphs: bool, block: int) -> None:
        self._model = weakref.ref(model)  # a kept runner must not keep a released model
        self.sampler, self.variant = sampler, variant
        self.slots, self.width, self.max_new, self.block = slots, width, max_new, block
        self.graphs = graphs
        length = -(-(width + max_new) // 16) * 16  # SDPA pads masks to 16 otherwise
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        dev = self.device
        self.cache = SlotKV(model, slots, length)
        self.arange = torch.arange(length, device=dev)
        self.valid = torch.zeros(slots, length, dtype=torch.bool, device=dev)
        self.base = torch.zeros(slots, dtype=torch.long, device=dev)
        self.keys = torch.zeros(slots, 2, dtype=torch.long, device=dev)
        # An idle slot sits at step 1 (feeding at `width`, which its mask allows), so no row is
        # ever fully masked: a fully masked row could give NaN logits in some attention path.
        self.step = torch.ones(slots, dtype=torch.long, device=dev)
        self.last = torch.zeros(slots, dtype=torch.long, device=dev)
        # Row 0: token 0 of the rows admitted before the block; rows 1..block: its steps.
        self.out = torch.zeros(block + 1, slots, dtype=torch.long, device=dev)
        self.row = torch.ones(1, dtype=torch.long, device=dev)  # the block row written next
        pin = dev.type == "cuda"
        self.host_out = torch.zeros(block + 1, slots, dtype=torch.long, pin_memory=pin)
        self.copied = torch.cuda.Event() if pin else None
        # The prompt's ids, then the sampled ones; entries not yet sampled repeat the prompt's
        # last token, which counts anyway. One spare entry for the saturated step.
        self.seen = (torch.zeros(slots, width + max_new + 1, dtype=torch.long, device=dev)
                     if penalise else None)
        # Each slot's prompt logits at its last position (what token 0 is drawn from), kept
        # so that a row with the same prompt can start from them; made at the first prefill.
        self.first_logits: torch.Tensor | None = None
        # Which prompt each slot's cache holds at [0, width): the host's map for sharing.
        self.prompt_of: dict[int, tuple[int, ...]] = {}
        self._graph: torch.cuda.CUDAGraph | None = None
        self._captured = False
        self.share_prefixes = True  # False once a shared-prefix prefill failed here

    @property
    def model(self) -> Any:
        model = self._model()
        if model is None:
            raise RuntimeError("the runner's model was released")
        return model

    def admit(self, slots: list[int], ids: torch.Tensor, mask: torch.Tensor,
              keys: torch.Tensor, sources: list[int | None] | None = None,
              prefixes: list[tuple[int, ...]] | None = None) -> None:
        """Load prompts (left-padded to `width`) into `slots` and sample each one's token 0.

        A row whose `sources` entry is a slot holding the same prompt (one loaded earlier, or
        prefilled by this call) copies that slot's prompt KV and last logits instead of
        prefilling again: rows that share a prompt (few-shot examples drawn per batch)
        prefill it once. `prefixes`, per row: token ids its prompt starts with (shorter than
        it), or (); prefilled rows with the same non-empty prefix, two or more, prefill it
        once and each only its own suffix after it (`_prefill_shared`).
        """
        width, dev = self.width, self.device
        sources = sources or [None] * len(slots)
        rows = torch.tensor(slots, dtype=torch.long, device=dev)
        valid = torch.zeros(len(slots), self.valid.shape[1], dtype=torch.bool, device=dev)
        valid[:, :width] = mask.bool()
        self.valid[rows] = valid
        self.base[rows] = mask.sum(dim=1)
        self.keys[rows] = keys
        seen = None
        if self.seen is not None:
            last = ids[:, -1:]
            seen = torch.cat([torch.where(mask.bool(), ids, last),
                              last.expand(-1, self.seen.shape[1] - width)], dim=1)
            self.seen[rows] = seen
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, holder in enumerate(sources):
            if holder is None:
                prefix = prefixes[i] if prefixes and self.share_prefixes else ()
                groups.setdefault(prefix, []).append(i)
        whole = groups.pop((), [])
        for prefix, members in groups.items():
            if len(members) < 2 or not self.share_prefixes:
                whole += members
                continue
            try:
                self._prefill_shared([slots[i] for i in members], ids[members], mask[members],
                                     prefix)
            except Exception as exc:  # a kernel path the split prefill cannot take here
                if isinstance(exc, torch.cuda.OutOfMemoryError):
                    raise
                _log.warning("shared_prefix_unavailable", error=str(exc)[:300])
                self.share_prefixes = False  # whole prefills from now on (they overwrite all)
                whole += members
        if whole:
            whole.sort()
            self._prefill([slots[i] for i in whole], ids[whole], mask[whole])
        copies = [(slots[i], src) for i, src in enumerate(sources) if src is not None]
        if copies:
            dst = torch.tensor([d for d, _ in copies], dtype=torch.long, device=dev)
            src = torch.tensor([s for _, s in copies], dtype=torch.long, device=dev)
            for kv in (*self.cache.keys, *self.cache.values):
                kv[dst, :, :width] = kv[src, :, :width]
            assert self.first_logits is not None
            self.first_logits[dst] = self.first_logits[src]
        assert self.first_logits is not None
        logits = self.first_logits[rows]  # a copy: the penalty below writes into it
        zero = torch.zeros(len(slots), dtype=torch.long, device=dev)
        token, _ = self.sampler.pick(logits, seen, keys, zero, self.variant)
        if self.seen is not None:
            self.seen[rows, width] = token
        self.out[0, rows] = token
        self.last[rows] = token
        self.step[rows] = 1

    def _prefill(self, slots: list[int], ids: torch.Tensor, mask: torch.Tensor) -> None:
        rows = torch.tensor(slots, dtype=torch.long, device=self.device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        self.cache.rows = rows
        try:
            logits = model_step(self.model, self.cache, ids,
                                prefill_mask(mask.bool(), self.width, self.dtype), positions)
        finally:
            self.cache.rows = None
        if self.first_logits is None:
            self.first_logits = torch.zeros(self.slots, logits.shape[1], dtype=logits.dtype,
                                            device=self.device)
        self.first_logits[rows] = logits

    def _prefill_shared(self, slots: list[int], ids: torch.Tensor, mask: torch.Tensor,
                        prefix: tuple[int, ...]) -> None:
        """Prefill rows whose prompts all start with `prefix`: the prefix alone once (one
        row, positions 0..P-1), its keys and values copied into each row's cache at the
        row's own offset (prompts are left-padded, so a row's prefix starts at width - its
        length), then the rows' last columns at their positions, attending over the cache,
        each row writing only its own suffix. What each row's cache and last logits hold is
        what `_prefill` computes from the whole prompt (the same keys, values and positions)."""
        dev, width, n_prefix = self.device, self.width, len(prefix)
        rows = torch.tensor(slots, dtype=torch.long, device=dev)
        lengths = mask.sum(dim=1)
        longest = int(lengths.max())  # one host sync; the device is idle at admission
        tail = max(2, longest - n_prefix)  # two or more query columns: the prefill kernels
        alone = PrefixKV()
        model_step(self.model, alone, torch.tensor([prefix], device=dev),
                   prefill_mask(torch.ones(1, n_prefix, dtype=torch.bool, device=dev),
                                n_prefix, self.dtype),
                   torch.arange(n_prefix, device=dev)[None, :])
        at = (width - lengths)[:, None] + torch.arange(n_prefix, device=dev)[None, :]
        for layer, k in alone.keys.items():
            self.cache.keys[layer][rows[:, None], :, at] = k[0].transpose(0, 1)
            self.cache.values[layer][rows[:, None], :, at] = alone.values[layer][0].transpose(0, 1)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        own = torch.arange(tail, device=dev)[None, :] >= (tail - (lengths - n_prefix))[:, None]
        start = width - tail
        self.cache.rows, self.cache.suffix = rows, (start, own)
        try:
            logits = model_step(self.model, self.cache, ids[:, start:].contiguous(),
                                prefill_mask(mask.bool(), width, self.dtype)[:, :, start:]
                                .contiguous(), positions[:, start:].contiguous())
        finally:
            self.cache.rows, self.cache.suffix = None, None
        if self.first_logits is None:
            self.first_logits = torch.zeros(self.slots, logits.shape[1], dtype=logits.dtype,
                                            device=dev)
        self.first_logits[rows] = logits

    def _body(self) -> None:
        # Feed each slot's last token (token step-1) at position width+step-1; sample token
        # `step` with the slot's key at its own step; advance, saturating at max_new.
        slot = self.step + (self.width - 1)
        self.cache.slots = slot
        allowed = self.valid | ((self.arange >= self.width) & (self.arange <= slot[:, None]))
        zero = torch.zeros((), dtype=self.dtype, device=self.device)
        mask = torch.where(allowed, zero, torch.finfo(self.dtype).min)[:, None, None, :]
        positions = (self.base + self.step - 1)[:, None]
        logits = model_step(self.model, self.cache, self.last[:, None], mask, positions)
        token, _ = self.sampler.pick(logits, self.seen, self.keys, self.step, self.variant)
        self.out.index_copy_(0, self.row, token[None, :])
        self.last.copy_(token)
        if self.seen is not None:
            self.seen.scatter_(1, (self.step + self.width)[:, None], token[:, None])
        self.step.copy_(torch.clamp(self.step + 1, max=self.max_new))
        self.row.add_(1)

    def run_block(self, n: int, log: Any) -> Block:
        """Queue n decode steps (graph replays on CUDA) and the copy of their tokens to the
        host; return at once. `Block.tokens()` waits for them: per slot, row 0 (token 0 of
        rows admitted since the last round) and the n steps. The host may do other work in
        between (the refill loop hands finished items to the phase there)."""
        self.row.fill_(1)
        graph = self._capture(log) if self.graphs else None
        for _ in range(n):
            if graph is None:
                self._body()
            else:
                graph.replay()
        self.host_out[: n + 1].copy_(self.out[: n + 1], non_blocking=True)
        if self.copied is not None:
            self.copied.record()
        return Block(self, n)

    def _snapshot(self) -> tuple[torch.Tensor, ...]:
        return self.step.clone(), self.last.clone(), self.row.clone()

    def _restore(self, saved: tuple[torch.Tensor, ...]) -> None:
        step, last, row = saved
        self.step.copy_(step)
        self.last.copy_(last)
        self.row.copy_(row)
        if self.seen is not None:  # entries the warm-up sampled go back to "not yet"
            cols = torch.arange(self.seen.shape[1], device=self.device)
            future = cols[None, :] >= (self.width + step)[:, None]
            self.seen.copy_(torch.where(future, self.seen[:, self.width - 1 : self.width],
                                        self.seen))

    def _capture(self, log: Any) -> torch.cuda.CUDAGraph | None:
        # Once: two warm-up steps on a side stream (lazy inits and library handles outside
        # the capture), state restored, then the capture (which does not run the step).
        if self._captured:
            return self._graph
        self._captured = True
        started = time.perf_counter()
        saved = self._snapshot()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._body()
                    self._restore(saved)
            torch.cuda.current_stream().wait_stream(side)
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._body()
        except RuntimeError as exc:  # an op that cannot be captured: run the steps eagerly
            if isinstance(exc, torch.cuda.OutOfMemoryError):
                raise
            torch.cuda.synchronize()
            log.warning("cuda_graph_unavailable", what=f"refill {self.variant}",
                        error=str(exc)[:300])
            self._restore(saved)
            return None
        self._restore(saved)
        self._graph = graph
        log.info("fastgen_captured", variant=f"refill {self.variant}", batch=self.slots,
                 seconds=round(time.perf_counter() - started, 3))
        return graph
