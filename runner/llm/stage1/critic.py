"""What `critic_filter` does per item: debiased judgements, and the probe set's figures.

`CriticJudge.judge` builds each item's prompt in the spec's label order and, when debiasing is
on (the default), again in the swapped order (`Templates.swapped`: header and few-shot labels
say yes = B), scores both through the on-disk score cache and returns a `Judgement` per item
(`calibration.py` defines the arithmetic). Both orders' scores are cached under their own
prompt's key, so an ITERATE that changes only the threshold finds all of them there.

`CriticJudge.probe` scores the probe set of `probes.py` with exactly the same prompts (the
same few-shot draw, the same orders) and returns its report: the figures, the counts, and for
a set too small for a figure the reason, which the QC review shows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runner.llm.critic import scoring as critic_lib
from runner.llm.critic.calibration import Judgement, accuracy_at, label_bias, roc_auc
from runner.llm.loading.contamination import check_token_ids
from runner.llm.loading.loader import LoadedModel, encode_prompts
from runner.llm.stage1 import probes as probe_lib
from runner.llm.text.prompts import critic_prompt, pick_balanced
from runner.llm.text.templates import Templates

__all__ = ["PROBES_FILE", "CriticJudge", "Scored"]

PROBES_FILE = "probes.json"  # in the critic phase's folder (shard 0's, when sharded)


@dataclass(frozen=True)
class Scored:
    """One judged item: both orders' raw scores, the judgement and the first order's prompt."""

    ab: critic_lib.Score
    ba: critic_lib.Score | None
    judgement: Judgement
    prompt: str
    cached: bool  # every order's score came from the cache

    def fields(self) -> dict[str, Any]:
        """The record fields: the yes=A scores as before, the swapped ones, p_yes."""
        out: dict[str, Any] = {**self.ab.as_dict(), "p_yes": self.judgement.p_yes,
                               "prompt_sha256": hashlib.sha256(self.prompt.encode()).hexdigest()}
        if self.ba is not None:
            out.update({"p_a_swapped": self.ba.p_a, "logprob_a_swapped": self.ba.logprob_a,
                        "logprob_b_swapped": self.ba.logprob_b})
        return out


@dataclass
class CriticJudge:
    """A critic phase's fixed setting: templates, kind, few-shot pool, cache, model."""

    phase: str
    kind: str
    t: Templates
    labels: list[str]
    label_ids: tuple[int, int]
    pool: list[dict[str, Any]]
    accepted: list[bool]
    shots: int
    debias: bool
    tokenizer: Any
    denylist: Any
    cache: critic_lib.ScoreCache
    model_key: str
    get_model: Callable[[], LoadedModel]
    log: Any

    def _orders(self) -> list[Templates]:
        return [self.t, self.t.swapped()] if self.debias else [self.t]

    def judge(self, items: list[dict[str, Any]], shots: list[list[dict[str, Any]]],
              ids: list[str]) -> list[Scored]:
        """Score `items` (with their rows' few-shot examples) in each label order."""
        prompts = [critic_prompt(self.kind, sh, it, t)
                   for t in self._orders() for it, sh in zip(items, shots)]
        token_ids = encode_prompts(self.tokenizer, prompts)
        check_token_ids(self.denylist, token_ids, ids * len(self._orders()), self.phase)
        keys = [self.cache.key(self.model_key, prompt, self.labels) for prompt in prompts]
        scores, hit = critic_lib.score_cached_flags(self.cache, keys, token_ids, self.label_ids,
                                                    self.get_model, self.log)
        n = len(items)
        out = []
        for i in range(n):
            ab = scores[i]
            ba = scores[n + i] if self.debias else None
            cached = hit[i] and (not self.debias or hit[n + i])
            out.append(Scored(ab, ba, Judgement(ab.p_a, ba.p_a if ba else None), prompts[i],
                              cached))
        return out

    def row_shots(self, seed: int, rows: int, exclude: list[int | None] | None = None
                  ) -> list[list[dict[str, Any]]]:
        """Balanced few-shot examples for each row of a batch (an excluded pool item each)."""
        exclude = exclude or [None] * rows
        return [pick_balanced(self.pool, self.accepted, self.shots, seed, row, exclude[row])
                for row in range(rows)]

    def probe(self, items: list[dict[str, Any]], seed: int, limit: int,
              threshold: float) -> dict[str, Any]:
        """Score the probe set; its figures (or the reason there are none) and every item."""
        bad = probe_lib.planted_bad(items, self.kind, seed, limit) if limit > 0 else []
        good = probe_lib.planted_good(self.pool, self.accepted) if limit > 0 else []
        probe_items = good + bad
        exclude = [it.get("pool_index") for it in probe_items]
        shots = self.row_shots(seed ^ 0x5EED, len(probe_items), exclude)
        ids = [f"{self.phase}/probe/{it['id']}" for it in probe_items]
        scored = self.judge(probe_items, shots, ids) if probe_items else []
        good_s = [s.judgement.p_yes for it, s in zip(probe_items, scored) if it["probe"] == "gold"]
        bad_s = [s.judgement.p_yes for it, s in zip(probe_items, scored) if it["probe"] != "gold"]
        report: dict[str, Any] = {
            "kind": self.kind, "good": len(good_s), "bad": len(bad_s), "threshold": threshold,
            "debiased": self.debias, "label_bias": label_bias([s.judgement for s in scored]),
            "items": [{**it, "p_yes": s.judgement.p_yes, "p_a": s.ab.p_a,
                       "p_a_swapped": s.ba.p_a if s.ba else None}
                      for it, s in zip(probe_items, scored)],
        }
        reason = (probe_lib.too_small(len(good_s), len(bad_s), bool(self.pool))
                  if limit > 0 else "probes switched off (with.probes: 0)")
        report["left_out"] = reason
        if reason is None:
            report["probe_auc"] = roc_auc(good_s, bad_s)
            report["probe_accuracy"] = accuracy_at(good_s, bad_s, threshold)
        return report
