"""SFT data: tokenised examples, a seeded epoch order, packing, and micro-batch tensors.

Resume must be bit-exact, so everything here is a pure function of the examples, the seed and
a `DataPosition` (epoch, cursor into that epoch's shuffled order): a checkpoint stores the
position, and the resumed run rebuilds exactly the micro-batches the killed one would have seen.

Packing (why and how): SFT examples are short and vary in length, so padding every row to the
longest one wastes much of the GPU on pad tokens. A packed row concatenates whole examples in
their shuffled order, each into the first row with room for it. Attention must not cross example
boundaries: each example's `position_ids` restart at 0, and with `attention_mask=None`
transformers 5.x detects the restarts (`masking_utils.find_packed_sequence_indices`) and builds
a block-diagonal causal mask for sdpa/eager (flash-attention's varlen path reads the same
position ids). Trailing pad tokens continue the last example's positions: causal attention
means no real token ever sees them, and their labels are -100. An unpacked row (one example)
keeps plain 0..n positions, so transformers takes the maskless `is_causal` fast path.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from runner.store.batches import derive_seed

__all__ = [
    "IGNORE",
    "DataPosition",
    "DataStream",
    "Example",
    "MicroBatch",
    "collate",
    "tokenize_pairs",
]

IGNORE = -100  # the label value cross-entropy skips (prompt and pad positions)
MAX_DEFERRED = 4  # best-fit packing: examples one micro-batch may put off to the next


@dataclass(frozen=True)
class Example:
    """One tokenised example: the prompt's tokens (no loss) followed by the completion's."""

    input_ids: tuple[int, ...]
    n_prompt: int

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize_pairs(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], max_seq_len: int
) -> tuple[list[Example], int, int]:
    """Tokenise (prompt, completion) pairs: (examples, skipped, truncated).

    Prompt and completion are encoded separately and joined, so the loss boundary falls exactly
    between them (encoding the joined text could merge tokens across it). BOS goes first when
    the tokenizer has one (the loader's policy) and EOS last, so the tuned model learns to
    stop. An example longer than `max_seq_len` loses the end of its completion; one whose
    prompt leaves no room for a single completion token is skipped.
    """
    if not pairs:
        return [], 0, 0
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    completions = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    examples: list[Example] = []
    skipped = truncated = 0
    for prompt, completion in zip(prompts, completions):
        head = bos + list(prompt)
        tail = list(completion) + eos
        if len(head) >= max_seq_len or not tail:
            skipped += 1
            continue
        if len(head) + len(tail) > max_seq_len:
            truncated += 1
            tail = tail[: max_seq_len - len(head)]
        examples.append(Example(tuple(head + tail), len(head)))
    return examples, skipped, truncated


@dataclass(frozen=True)
class DataPosition:
    """Where the data stream stands: an epoch, an index into its shuffled order, and the
    indices into that order before the cursor that best-fit packing put off to the next
    micro-batch (`deferred`, always empty with first fit)."""

    epoch: int = 0
    cursor: int = 0
    deferred: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor, "deferred": list(self.deferred)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataPosition:
        """The inverse of `as_dict` (checkpoints written before `deferred` existed have none)."""
        return cls(int(d["epoch"]), int(d["cursor"]), tuple(int(x) for x in d.get("deferred", ())))


@dataclass
class MicroBatch:
    """The tensors of one forward/backward pass and its token counts."""

    input_ids: torch.Tensor  # [rows, length] long
    labels: torch.Tensor  # [rows, length] long, IGNORE where no loss
    position_ids: torch.Tensor  # [rows, length] long, restarting at every example
    real_tokens: int  # non-pad tokens (what tokens/s counts)
    label_tokens: int  # positions that carry loss once labels are shifted
    segments: list[list[int]]  # example lengths per row (tests, diagnostics)

    def to(self, device: torch.device) -> MicroBatch:
        """The model inputs on `device`; labels stay on the host (the loss indexes them there)."""
        return MicroBatch(self.input_ids.to(device), self.labels,
                          self.position_ids.to(device), self.real_tokens, self.label_tokens,
                          self.segments)


def collate(rows: Sequence[Sequence[Example]], pad_id: int, width: int | None = None
            ) -> MicroBatch:
    """Rows of examples -> right-padded tensors, positions restarting per example.

    `width`: pad every row to at least this many tokens (one shape for compiled layers);
    default: the longest row.
    """
    width = max([sum(len(e) for e in row) for row in rows] + [width or 0])
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    real = 0
    for r, row in enumerate(rows):
        at = 0
        for ex in row:
            n = len(ex)
            ids[r, at : at + n] = torch.tensor(ex.input_ids, dtype=torch.long)
            labels[r, at + ex.n_prompt : at + n] = ids[r, at + ex.n_prompt : at + n]
            # The first token of an example is never a target: nothing of its own precedes it
            # (already so while prompts are non-empty; explicit, so packing can never leak).
            labels[r, at] = IGNORE
            positions[r, at : at + n] = torch.arange(n)
            at += n
        real += at
        if at < width:  # pads continue the last example's positions (see module docstring)
            last = int(positions[r, at - 1]) if at else -1
            positions[r, at:] = torch.arange(last + 1, last + 1 + width - at)
    label_tokens = int((labels[:, 1:] != IGNORE).sum())
    segments = [[len(e) for e in row] for row in rows]
    return MicroBatch(ids, labels, positions, real, label_tokens, segments)


class DataStream:
    """Micro-batches as a pure function of (examples, seed, DataPosition).

    A micro-batch never crosses the end of an epoch (its last one may have fewer rows), so the
    number of micro-batches of each epoch is known in advance and `epochs:` maps to an exact
    number of optimizer steps. `best_fit`: packed rows by best fit (`_plan_best_fit`) instead of
    first fit; `fixed_width`: every micro-batch `max_seq_len` wide (for compiled layers).
    """

    def __init__(self, examples: Sequence[Example], seed: int, batch_size: int,
                 max_seq_len: int, packing: bool, pad_id: int, best_fit: bool = False,
                 fixed_width: bool = False) -> None:
        if not examples:
            raise ValueError("no training examples")
        self.examples = list(examples)
        self.seed, self.batch_size, self.max_seq_len = seed, batch_size, max_seq_len
        self.packing, self.pad_id, self.best_fit = packing, pad_id, best_fit
        self.width = max_seq_len if fixed_width else None  # rows padded to max_seq_len
        self._orders: dict[int, list[int]] = {}

    def order(self, epoch: int) -> list[int]:
        """The epoch's shuffled order: its own RNG from (seed, epoch), nothing global."""
        if epoch not in self._orders:
            order = list(range(len(self.examples)))
            random.Random(derive_seed(self.seed, "sft-epoch", epoch)).shuffle(order)
            self._orders = {epoch: order}  # one epoch at a time: memory stays O(examples)
        return self._orders[epoch]

    def _plan(self, pos: DataPosition) -> tuple[list[list[int]], DataPosition]:
        if self.packing and self.best_fit:
            return self._plan_best_fit(pos)
        return self._plan_first_fit(pos)

    def _plan_best_fit(self, pos: DataPosition) -> tuple[list[list[int]], DataPosition]:
        """Best-fit packing of the examples from the cursor into `batch_size` rows.

        Why: first fit in arrival order closes a micro-batch at the first example that fits
        nowhere, leaving rows ~85% full at 64-512-token examples in 512-token rows; the same
        compute could carry more real tokens. Here each example goes into the fullest row with
        room for it; when none has room, all examples taken so far are repacked longest first
        (best-fit decreasing); when that fails too, the example is put off to the next
        micro-batch (at most `MAX_DEFERRED` of them, which open the next micro-batch) and the
        scan goes on. The position records the cursor and the put-off examples, so it still
        says exactly what was consumed (exact resume), and the plan is a pure function of it.
        """
        order = self.order(pos.epoch)
        cap, limit = self.max_seq_len, self.batch_size
        rows: list[list[int]] = []
        taken: list[int] = []
        deferred: list[int] = []
        # Examples put off last time come first (few: they fit unless rows are very few).
        earlier = list(pos.deferred)
        i = pos.cursor
        while earlier or i < len(order):
            j = earlier.pop(0) if earlier else i
            k = order[j]
            packed = _place(rows, [k], self._length, cap, limit)
            if packed is None:
                packed = _place([], sorted(taken + [k], key=lambda x: (-self._length(x), x)),
                                self._length, cap, limit)
            if packed is not None:
                rows, taken = packed, taken + [k]
            elif j < pos.cursor:  # put off before and still no room: stays put off
                deferred.append(j)
            elif len(deferred) < MAX_DEFERRED:
                deferred.append(j)
            else:
                break  # order[i] is not consumed: the cursor stays on it
            if j >= pos.cursor:
                i += 1
        if i >= len(order) and not deferred:
            return rows, DataPosition(pos.epoch + 1, 0)
        return rows, DataPosition(pos.epoch, i, tuple(sorted(deferred)))

    def _length(self, k: int) -> int:
        return len(self.examples[k])

    def _plan_first_fit(self, pos: DataPosition) -> tuple[list[list[int]], DataPosition]:
        """Example indices of each row of the micro-batch at `pos`, and the next position.

        Examples are taken strictly in order (so a cursor says what was consumed). Packed,
        each goes into the first of the micro-batch's rows with room for it (first fit, which
        fills rows far better than closing a row at the first misfit); a new row opens when
        none has room; the micro-batch ends at the first example that fits nowhere once all
        `batch_size` rows are open. Unpacked, every example is its own row.
        """
        order = self.order(pos.epoch)
        rows: list[list[int]] = []
        used: list[int] = []
        i = pos.cursor
        while i < len(order):
            n = len(self.examples[order[i]])
            slot = None
            if self.packing:
                slot = next((r for r, u in enumerate(used) if u + n <= self.max_seq_len), None)
            if slot is None:
                if len(rows) >= self.batch_size:
                    break
                rows.append([])
                used.append(0)
                slot = len(rows) - 1
            rows[slot].append(order[i])
            used[slot] += n
            i += 1
        nxt = DataPosition(pos.epoch + 1, 0) if i >= len(order) else DataPosition(pos.epoch, i)
        return rows, nxt

    def next(self, pos: DataPosition) -> tuple[MicroBatch, DataPosition]:
        """The micro-batch at `pos` and the position after it."""
        plan, nxt = self._plan(pos)
        return collate([[self.examples[k] for k in row] for row in plan], self.pad_id,
                       self.width), nxt

    def micro_batches_in_epoch(self, epoch: int) -> int:
        """How many micro-batches epoch `epoch` yields (plans only; builds no tensors)."""
        pos, count = DataPosition(epoch, 0), 0
        while pos.epoch == epoch:
            _, pos = self._plan(pos)
            count += 1
        return count


def _place(rows: list[list[int]], items: list[int], length: Any, cap: int,
           limit: int) -> list[list[int]] | None:
    """`rows` (copied) with each item put into the fullest row with room (a new row while
    fewer than `limit`); None when an item fits nowhere."""
    out = [list(r) for r in rows]
    used = [sum(length(k) for k in r) for r in out]
    for k in items:
        n = length(k)
        fits = [r for r in range(len(out)) if used[r] + n <= cap]
        if fits:
            r = max(fits, key=lambda j: (used[j], -j))
        elif len(out) < limit:  # (an item longer than `cap` gets a row alone, as in first fit)
            out.append([])
            used.append(0)
            r = len(out) - 1
        else:
            return None
        out[r].append(k)
        used[r] += n
    return out
