"""Single-token A/B logprob critic: forward passes only, no sampling, cached scores.

The critic prompt ends on `### Answer:` and the model's next-token distribution at that last
position is the whole judgement: `logprob_a` and `logprob_b` are the log-probabilities of the
two label tokens over the full vocabulary; `p_a = exp(la) / (exp(la) + exp(lb))` renormalises
over {A, B} (computed as sigmoid(la - lb), which is exact and stable); `margin = la - lb`. A
record is accepted when `p_a >= confidence_threshold`.

Both labels must encode to exactly one token each (with the tokenizer, no special tokens);
otherwise the label is not a single next token and "p(A)" means nothing, so the phase fails
before scoring anything, naming the labels and their tokens.

Prompts are scored in length buckets (`bucketing.py`): sorted by token length and cut into
forwards whose padding is at most ~10% of their real tokens, since a padded batch of
prompts spread from 20 to 400 tokens would otherwise compute about twice what it uses. Each
forward is `critic_forward.next_token_logits`: right padding with no mask, only the last real
positions through lm_head, and compiled layers once a process scores a lot. Scores come back
in the order given, and equal the unbucketed ones up to float rounding (a test checks verdicts).

Scores do not depend on the threshold, so they are cached on disk under
`cache_dir/critic/`, keyed by sha256 of (model key, prompt text, labels): one SQLite file per
phase (and per shard of a sharded phase), `<phase>[.shardNNNN].sqlite` (`runner.store.kv`),
kept across iterations, written one transaction per scored batch. An ITERATE that changes only
`confidence_threshold` finds every score there: the caller never loads the model and no
forward pass runs. Runs made before kept one JSON file per score (`critic/ab/<key>.json`);
those files are still read, so resuming such a run does not score again. `FORWARD_CALLS`
counts real forward passes (the re-use test reads it). The model key is the model hash plus
the resolved dtype and device, because a bf16 GPU score is not the float32 CPU score.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

from runner.errors import PhaseError
from runner.llm.critic.bucketing import bucket_stats, plan_buckets
from runner.llm.critic.forward import next_token_logits
from runner.llm.loading.loader import LoadedModel
from runner.store.kv import KVStore

__all__ = [
    "FORWARD_CALLS",
    "LabelError",
    "Score",
    "ScoreCache",
    "forward_calls",
    "label_token_ids",
    "score_cached",
    "score_cached_flags",
    "score_prompts",
]

FORWARD_CALLS = 0
_log = structlog.get_logger("runner.llm")


def forward_calls() -> int:
    """How many critic forward passes this process has run."""
    return FORWARD_CALLS


class LabelError(PhaseError):
    """A critic label does not encode to exactly one token (or both give the same one)."""


@dataclass(frozen=True)
class Score:
    """The critic's reading of one prompt; independent of the threshold."""

    logprob_a: float
    logprob_b: float
    p_a: float
    margin: float

    @classmethod
    def from_logprobs(cls, la: float, lb: float) -> Score:
        margin = la - lb
        p_a = 1.0 / (1.0 + math.exp(-margin)) if margin > -700 else 0.0
        return cls(la, lb, p_a, margin)

    def accepted(self, threshold: float) -> bool:
        """The verdict: accept when p_a >= threshold."""
        return self.p_a >= threshold

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def label_token_ids(tokenizer: Any, labels: list[str], phase: str) -> tuple[int, int]:
    """The token ids of the two labels, or `LabelError` naming each label and its tokens."""
    if len(labels) != 2:
        raise LabelError(phase, f"critic labels must be two strings, got {labels!r}")
    encoded = [tokenizer.encode(label, add_special_tokens=False) for label in labels]
    if any(len(ids) != 1 for ids in encoded) or encoded[0] == encoded[1]:
        shown = ", ".join(
            f"{label!r} -> {tokenizer.convert_ids_to_tokens(ids)} ({len(ids)} tokens)"
            for label, ids in zip(labels, encoded)
        )
        raise LabelError(
            phase, f"critic labels must each encode to exactly one distinct token: {shown}"
        )
    return encoded[0][0], encoded[1][0]


@torch.inference_mode()
def _score_chunk(lm: LoadedModel, rows: list[list[int]], a: int, b: int) -> list[Score]:
    global FORWARD_CALLS
    FORWARD_CALLS += 1
    logits = next_token_logits(lm, rows)
    logprobs = logits.log_softmax(dim=-1)[:, [a, b]].cpu().tolist()
    return [Score.from_logprobs(la, lb) for la, lb in logprobs]


def score_prompts(
    lm: LoadedModel,
    token_ids: list[list[int]],
    labels: tuple[int, int],
    log: Any = None,
    *,
    bucketed: bool = True,
    max_waste: float = 0.10,
    max_tokens: int = 32768,
    stats: dict[str, float] | None = None,
) -> list[Score]:
    """Score every prompt; records come back in the order given.

    `bucketed`: forwards over length buckets (`bucketing.plan_buckets`: sorted by length,
    padding at most `max_waste` of the real tokens, at most `max_tokens` padded tokens a
    forward); else one forward of all prompts as given. A forward that runs out of CUDA
    memory is retried as two halves. `stats`, when given, receives forwards, real_tokens,
    padded_tokens and padding_waste (padding over real tokens) of the forwards that ran.
    """
    log = log or _log
    results: dict[int, Score] = {}
    lengths = [len(r) for r in token_ids]
    if not token_ids:
        todo: list[list[int]] = []
    elif bucketed:
        todo = plan_buckets(lengths, max_waste=max_waste, max_tokens=max_tokens)
    else:
        todo = [list(range(len(token_ids)))]
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    ran: list[list[int]] = []
    while todo:
        places = todo.pop(0)
        try:
            scores = _score_chunk(lm, [token_ids[i] for i in places], *labels)
        except oom:
            if len(places) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(places) // 2
            log.warning("oom_split", rows=len(places), into=[half, len(places) - half])
            todo[:0] = [places[:half], places[half:]]
            continue
        ran.append(places)
        results.update(zip(places, scores))
    if stats is not None:
        cost = bucket_stats(lengths, ran)
        stats.update(forwards=cost.forwards, real_tokens=cost.real_tokens,
                     padded_tokens=cost.padded_tokens, padding_waste=cost.padding_waste)
    return [results[i] for i in range(len(token_ids))]


_SCORE_FIELDS = ("logprob_a", "logprob_b", "p_a", "margin")


def _score_from(data: dict[str, Any] | None) -> Score | None:
    """A Score from a stored object, or None when it lacks a field or one is not a number."""
    if data is None:
        return None
    try:
        if any(isinstance(data[k], bool) for k in _SCORE_FIELDS):
            return None
        return Score(**{k: float(data[k]) for k in _SCORE_FIELDS})
    except (KeyError, TypeError, ValueError):
        return None


class ScoreCache:
    """Critic scores on disk: one SQLite file `root/<name>.sqlite` (`runner.store.kv`).

    `get` and `put` take one item's key; `put`s inside `batch()` commit together, so a scored
    batch costs one transaction and a crash leaves all of it or none. A stored value that does
    not read back as a Score counts as missing and is scored again. The one-file-per-key
    folders of older runs (`root/ab/<key>.json`) are read when the database misses.
    """

    def __init__(self, root: Path, name: str = "scores") -> None:
        self.root = Path(root)
        self._kv = KVStore(self.root / f"{name}.sqlite", log=_log)
        self._legacy = self.root.is_dir() and any(
            p.is_dir() and len(p.name) == 2 for p in self.root.iterdir())

    @classmethod
    def for_phase(cls, cache_dir: Path, phase: str, shard: int | None = None) -> ScoreCache:
        """The cache of one critic phase: its own file, and each shard its own, so no two
        processes ever write one file (Ray workers on other hosts included)."""
        name = phase if shard is None else f"{phase}.shard{shard:04d}"
        return cls(Path(cache_dir) / "critic", name)

    @staticmethod
    def key(model_key: str, prompt: str, labels: list[str]) -> str:
        """sha256 of (model key, prompt text, labels)."""
        blob = json.dumps([model_key, prompt, list(labels)], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _legacy_get(self, key: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / key[:2] / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def get(self, key: str) -> Score | None:
        """The stored score, or None (also for a damaged entry, which is then rescored)."""
        score = _score_from(self._kv.get(key))
        if score is None and self._legacy:
            score = _score_from(self._legacy_get(key))
        return score

    def put(self, key: str, score: Score) -> None:
        """Store a score (committed at once, or with the enclosing `batch()`)."""
        self._kv.put(key, score.as_dict())

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Puts inside the block commit in one transaction; if it raises, none is stored."""
        with self._kv.transaction():
            yield

    def close(self) -> None:
        """Close the database (its WAL is folded back into the one file)."""
        self._kv.close()


def score_cached(
    cache: ScoreCache,
    keys: list[str],
    token_ids: list[list[int]],
    labels: tuple[int, int],
    get_model: Callable[[], LoadedModel],
    log: Any = None,
) -> tuple[list[Score], int]:
    """Scores for prompts (by cache key), scoring and storing only the missing ones.

    `get_model` is called only when a score is missing, so a fully cached batch loads no
    model and runs no forward pass. Returns the scores and the number of cache hits.
    """
    scores, hit = score_cached_flags(cache, keys, token_ids, labels, get_model, log)
    return scores, sum(hit)


def score_cached_flags(
    cache: ScoreCache,
    keys: list[str],
    token_ids: list[list[int]],
    labels: tuple[int, int],
    get_model: Callable[[], LoadedModel],
    log: Any = None,
) -> tuple[list[Score], list[bool]]:
    """`score_cached`, returning for each prompt whether its score came from the cache."""
    found = [cache.get(k) for k in keys]
    missing = [i for i, s in enumerate(found) if s is None]
    if missing:
        fresh = score_prompts(get_model(), [token_ids[i] for i in missing], labels, log)
        with cache.batch():  # one transaction per scored batch
            for i, score in zip(missing, fresh):
                cache.put(keys[i], score)
                found[i] = score
    missed = set(missing)
    return [s for s in found if s is not None], [i not in missed for i in range(len(keys))]
