"""The host's side of batched decoding: each row's tokens, and where and why it stopped.

The fast loop hands the host a block of new tokens per row every few steps instead of one
token per step. The rules are the simple loop's, token for token: a row ends at its first EOS
(the EOS not kept) or at the first token whose decoded tail holds a stop string
(`StopChecker`, the stop string kept); whatever a row sampled after that is discarded. To
keep the host cheap, a block is first checked with one decode of its span; only a block that
holds a stop string is walked token by token to find the one that completed it.
"""

from __future__ import annotations

from typing import Any

from runner.llm.decoding.basics import Generation, StopChecker

__all__ = ["RowStops"]


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
        for i, new in enumerate(block):
            if self.how[i] is not None:
                continue
            cut = next((k for k, t in enumerate(new) if t in self.eos), None)
            start = len(self.out[i])
            self.out[i].extend(new if cut is None else new[:cut])
            if self._stop_string(i, start):
                self.how[i] = "stop_string"
            elif cut is not None:
                self.how[i] = "eos"

    def _stop_string(self, i: int, start: int) -> bool:
        ids, st = self.out[i], self.stopper
        if not st.stops or len(ids) == start:
            return False
        # One decode of the block's span first: most blocks hold no stop string at all.
        span = self.tok.decode(ids[max(0, start - st.window + 1):], skip_special_tokens=False)
        if not any(s in span for s in st.stops):
            return False
        for n in range(start + 1, len(ids) + 1):  # the token that completes it, as eagerly
            if st.hit(ids[:n]):
                del ids[n:]
                return True
        return False

    def results(self) -> list[Generation]:
        """One Generation a row; a row that never stopped hit max_new_tokens."""
        result = []
        for ids, how in zip(self.out, self.how):
            how = how or "max_new_tokens"
            text = self.tok.decode(ids, skip_special_tokens=False)
            result.append(Generation(text, len(ids), how == "max_new_tokens", how, tuple(ids)))
        return result
