"""What every decoding loop shares: sampling settings, a row's result, stops, EOS, devices.

Kept below `generation`, `fastgen`, `refill` and `static_kv` so that those import it and
never each other in a circle. `RowStops` is the host's view of the rows of the fast loops.
"""

from __future__ import annotations

import inspect
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch

from runner.llm.loading.loader import LoadedModel

__all__ = ["Generation", "RowStops", "SamplingParams", "StopChecker", "decode_many", "eos_ids",
           "forward_params", "on_device", "results_of", "take_rows"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample; `temperature == 0` means greedy."""

    temperature: float = 0.7
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 128
    stop_strings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, recorded in every record's provenance."""
        d = asdict(self)
        d["stop_strings"] = list(self.stop_strings)
        return d


@dataclass(frozen=True)
class Generation:
    """One row's continuation. `tokens` counts generated tokens, EOS excluded."""

    text: str
    tokens: int
    hit_token_limit: bool
    stopped_by: str  # "eos" | "stop_string" | "max_new_tokens"
    token_ids: tuple[int, ...]


class StopChecker:
    """Finds a stop string at the end of a growing token list by decoding only its tail.

    Every token is at least one byte, so the last `longest stop string in bytes + 1` tokens
    hold any stop string completed by the newest token.
    """

    def __init__(self, tokenizer: Any, stop_strings: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stop_strings if s)
        self.window = max((len(s.encode()) for s in self.stops), default=0) + 1

    def hit(self, ids: list[int]) -> bool:
        """True when the decoded tail of `ids` contains a stop string."""
        if not self.stops or not ids:
            return False
        tail = self.tokenizer.decode(ids[-self.window :], skip_special_tokens=False)
        return any(s in tail for s in self.stops)


def eos_ids(lm: LoadedModel) -> set[int]:
    """The token ids that end a row: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    if lm.tokenizer.eos_token_id is not None:
        ids.add(int(lm.tokenizer.eos_token_id))
    conf = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    for x in conf if isinstance(conf, list) else [conf]:
        if x is not None:
            ids.add(int(x))
    return ids


_FORWARD_PARAMS: dict[type[Any], frozenset[str]] = {}


def forward_params(model_class: type[Any]) -> frozenset[str]:
    """The keyword names a model class's forward takes (looked up once per class)."""
    params = _FORWARD_PARAMS.get(model_class)
    if params is None:
        params = _FORWARD_PARAMS[model_class] = frozenset(inspect.signature(model_class.forward).parameters)
    return params


def on_device(device: torch.device) -> AbstractContextManager[Any]:
    """Make `device` CUDA's current device inside the block. CUDA graphs are captured on the
    current device's streams and Triton launches on the current device, whatever device the
    tensors are on: a model on cuda:1 must run with cuda:1 current."""
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


# The host's side of batched decoding (the fast loops hand it a block of new tokens per row
# every few steps instead of one token per step). The rules are the simple loop's, token for
# token: a row ends at its first EOS (the EOS not kept) or at the first token whose decoded
# tail holds a stop string (`StopChecker`, the stop string kept); whatever a row sampled after
# that is discarded. To keep the host cheap, a block is first checked with one decode of its
# span, the spans of every row of a round in one call of the tokenizer's backend
# (`decode_many`); only a block that holds a stop string is walked token by token to find the
# one that completed it.

def decode_many(tokenizer: Any, rows: list[list[int]]) -> list[str]:
    """`tokenizer.decode(row, skip_special_tokens=False)` of each row, in one backend call
    where the result is the same (a fast tokenizer that cleans up no spaces)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", True) or not rows:
        return [tokenizer.decode(r, skip_special_tokens=False) for r in rows]
    return list(backend.decode_batch(rows, skip_special_tokens=False))


class RowStops:
    """The host's view of the rows: tokens so far, and why each row stopped."""

    def __init__(self, tokenizer: Any, eos: set[int], n: int, stop_strings: tuple[str, ...]
                 ) -> None:
        self.tok, self.eos = tokenizer, eos
        self.stopper = StopChecker(tokenizer, stop_strings)
        self.out: list[list[int]] = [[] for _ in range(n)]
        self.how: list[str | None] = [None] * n

    def done(self) -> bool:
        """True once every row has stopped."""
        return all(h is not None for h in self.how)

    def take(self, block: list[list[int]]) -> None:
        """Append one block of new tokens per row, stopping rows at EOS or a stop string."""
        take_rows([(self, i) for i in range(len(block))], block)

    def results(self) -> list[Generation]:
        """One Generation a row; a row that never stopped hit max_new_tokens."""
        return results_of([(self, i) for i in range(len(self.out))])


def results_of(rows: list[tuple[RowStops, int]]) -> list[Generation]:
    """`RowStops.results` of row `i` of each `(stops, i)`, decoded in one call per tokenizer."""
    texts: list[str] = [""] * len(rows)
    by_tok: dict[int, list[int]] = {}
    for n, (rs, _) in enumerate(rows):
        by_tok.setdefault(id(rs.tok), []).append(n)
    for ns in by_tok.values():
        tok = rows[ns[0]][0].tok
        for n, text in zip(ns, decode_many(tok, [rows[n][0].out[rows[n][1]] for n in ns])):
            texts[n] = text
    result = []
    for (rs, i), text in zip(rows, texts):
        ids, how = rs.out[i], rs.how[i] or "max_new_tokens"
        result.append(Generation(text, len(ids), how == "max_new_tokens", how, tuple(ids)))
    return result


def take_rows(rows: list[tuple[RowStops, int]], blocks: list[list[int]]) -> None:
    """`RowStops.take` for row `i` of each `(stops, i)` with its block: the same rules, with
    the stop-string check of all the rows decoded in one call per tokenizer."""
    checks: list[tuple[RowStops, int, int]] = []
    eos_at: dict[tuple[int, int], bool] = {}
    for (rs, i), new in zip(rows, blocks):
        if rs.how[i] is not None:
            continue
        cut = next((k for k, t in enumerate(new) if t in rs.eos), None)
        start = len(rs.out[i])
        rs.out[i].extend(new if cut is None else new[:cut])
        eos_at[(id(rs), i)] = cut is not None
        if rs.stopper.stops and len(rs.out[i]) > start:
            checks.append((rs, i, start))
        elif cut is not None:
            rs.how[i] = "eos"
    by_tok: dict[int, list[tuple[RowStops, int, int]]] = {}
    for check in checks:
        by_tok.setdefault(id(check[0].tok), []).append(check)
    for group in by_tok.values():
        spans = [rs.out[i][max(0, start - rs.stopper.window + 1):] for rs, i, start in group]
        for (rs, i, start), span in zip(group, decode_many(group[0][0].tok, spans)):
            if any(s in span for s in rs.stopper.stops) and _cut_at_stop(rs, i, start):
                rs.how[i] = "stop_string"
            elif eos_at[(id(rs), i)]:
                rs.how[i] = "eos"


def _cut_at_stop(rs: RowStops, i: int, start: int) -> bool:
    """Cut row i after the token that completes a stop string (as the eager loop finds it)."""
    ids, st = rs.out[i], rs.stopper
    for n in range(start + 1, len(ids) + 1):
        if st.hit(ids[:n]):
            del ids[n:]
            return True
    return False
