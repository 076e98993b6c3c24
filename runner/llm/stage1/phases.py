"""The Stage-1 built-in phases: generate_instructions, generate_responses, critic_filter, qc.

Each is `f(ctx) -> metrics`. All model work happens inside `ctx.batches` loop bodies and
depends only on the batch's items and seed, so a killed phase resumes where it stopped and
writes the same records as an uninterrupted run (on CPU). The model is loaded lazily, on the
first batch that needs it: a resumed phase with nothing left to do, or a critic whose scores
are all cached, loads none. Every generated output is kept as a record, whatever its class,
because QC rates need the failures in their denominators; `keep: true` marks the records a
later phase uses. `PHASE_KEYS` lists the `with:` keys of each phase (others are an error).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from runner.errors import PhaseError
from runner.llm.builtin import (
    Params,
    default_source,
    model_spec,
    own_records,
    progress,
    provenance,
    stage_of,
    usable_instructions,
)
from runner.llm.critic import scoring as critic_lib
from runner.llm.critic.calibration import Judgement, label_bias
from runner.llm.decoding.generation import Generation, SamplingParams, generate
from runner.llm.loading.contamination import chat_denylist
from runner.llm.loading.loader import (
    LoadedModel,
    load_model,
    load_tokenizer,
    model_fingerprint,
    resolve_device,
    resolve_dtype,
)
from runner.llm.stage1.critic import PROBES_FILE, CriticJudge
from runner.llm.stage1.qc import QC_KEYS, qc
from runner.llm.text.cleaning import CLASSES, classify, parse_instruction
from runner.llm.text.prompts import (
    example_accepted,
    instruction_prompt,
    load_fewshot,
    pick_shots,
    response_prompt,
    templates_from,
)
from runner.llm.text.templates import Templates

__all__ = ["PHASE_KEYS", "critic_filter", "generate_instructions", "generate_responses", "qc"]

_COMMON = {"batch_size", "fewshot", "shots", "templates"}
_SAMPLING = _COMMON | {"temperature", "top_p", "repetition_penalty", "max_new_tokens"}
PHASE_KEYS: dict[str, set[str]] = {
    "generate_instructions": _SAMPLING | {"count", "oversample"},
    "generate_responses": _SAMPLING | {"source"},
    "critic_filter": _COMMON | {"source", "kind", "confidence_threshold", "labels", "debias",
                                "probes"},
    "qc": set(QC_KEYS),
}


class _Model:
    """Loads the model on first use and tells the engine when it runs on CUDA."""

    def __init__(self, ctx: Any, spec: dict[str, Any]) -> None:
        self.ctx, self.spec = ctx, spec
        self.lm: LoadedModel | None = None

    def get(self) -> LoadedModel:
        if self.lm is None:
            self.lm = load_model(self.spec, self.ctx.phase)
            # The full provenance (hashes, dtype, device, chat template removed, sentinel)
            # beside the records, which carry only the model hash.
            path = Path(self.ctx.output_dir) / "model.json"
            path.write_text(json.dumps(self.lm.provenance, indent=2, sort_keys=True) + "\n")
            if self.lm.device.type == "cuda" and hasattr(self.ctx, "mark_cuda"):
                self.ctx.mark_cuda()
        return self.lm


class _Setup:
    """What both generators read from `with:`: templates, sampling, few-shot pool, model."""

    def __init__(
        self, ctx: Any, p: Params, temperature: float, max_new: int, need: tuple[str, ...]
    ) -> None:
        self.t: Templates = templates_from(p.get("templates"), ctx.phase)
        self.sampling = SamplingParams(
            temperature=p.number("temperature", temperature, 0.0),
            top_p=p.number("top_p", 0.95, 0.0, 1.0),
            repetition_penalty=p.number("repetition_penalty", 1.1, 0.01),
            max_new_tokens=p.integer("max_new_tokens", max_new, 1),
            stop_strings=self.t.stop_strings,
        )
        self.shots = p.integer("shots", 3, 0)
        self.fewshot = str(p.required("fewshot"))
        self.pool = load_fewshot(self.fewshot, getattr(ctx, "spec_dir", None), need, ctx.phase)
        spec = model_spec(ctx, p)
        self.model = _Model(ctx, spec)
        self.model_hash = model_fingerprint(spec, ctx.phase).model_hash
        self.settings: dict[str, Any] = {"shots": self.shots, "fewshot": self.fewshot,
                                         "fewshot_sha256": _pool_sha256(self.pool),
                                         **self.sampling.as_dict()}

    def run(
        self, ctx: Any, prompts: list[str], ids: list[str], seed: int, bar: Any
    ) -> tuple[LoadedModel, list[Generation]]:
        """Check the prompts for chat tokens, then generate: (model, one output per prompt)."""
        lm = self.model.get()
        token_ids = lm.check_prompts(prompts, [f"{ctx.phase}/{i}" for i in ids], ctx.phase)
        outs = generate(lm, token_ids, self.sampling, seed, on_rows=bar.update, log=ctx.log)
        return lm, outs


def _share(ctx: Any, items: Any) -> list[Any]:
    """This shard's share of the work (all of it when the phase is not sharded)."""
    split = getattr(ctx, "shard_items", None)
    return split(items) if callable(split) else list(items)


def _pool_sha256(pool: list[dict[str, Any]]) -> str:
    # The examples' content, not just the file name, is what the prompts were built from.
    return hashlib.sha256(json.dumps(pool, sort_keys=True).encode()).hexdigest()


def _specials(lm: LoadedModel) -> tuple[str, ...]:
    """The model's own special-token strings: one in a continuation starts a new turn."""
    tok = lm.tokenizer
    found = set(getattr(tok, "all_special_tokens", []) or [])
    decoder = getattr(tok, "added_tokens_decoder", {}) or {}
    found.update(str(added) for added in decoder.values() if getattr(added, "special", False))
    return tuple(sorted(x for x in found if x))


def _output_fields(out: Generation, prompt: str) -> dict[str, Any]:
    return {"raw": out.text, "tokens": out.tokens, "hit_token_limit": out.hit_token_limit,
            "stopped_by": out.stopped_by,
            "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()}


def _generation_metrics(records: list[dict[str, Any]], kept: int) -> dict[str, float]:
    n = len(records)
    classes = Counter(r["class"] for r in records)
    metrics: dict[str, float] = {"generated": n, "count": kept}
    metrics.update({cls: classes.get(cls, 0) for cls in CLASSES})
    metrics["runaway_rate"] = classes.get("runaway", 0) / n if n else 0.0
    metrics["token_limit_rate"] = classes.get("token_limit", 0) / n if n else 0.0
    return metrics


def generate_instructions(ctx: Any) -> dict[str, float]:
    """Few-shot instruction generation: ceil(count * oversample) samples, each classified."""
    p = Params(ctx, PHASE_KEYS["generate_instructions"])
    count = p.integer("count", None, 1)
    oversample = p.number("oversample", 2.0, 1.0)
    s = _Setup(ctx, p, 0.8, 64, ("instruction",))
    batch_size = p.integer("batch_size", 16, 1)
    settings = {"count": count, "oversample": oversample, "batch_size": batch_size, **s.settings}
    total = math.ceil(count * oversample)
    written: list[dict[str, Any]] = []
    bar = progress(ctx, total, f"{ctx.phase}: generate")
    for batch in ctx.batches(_share(ctx, range(total)), batch_size):
        shown = [pick_shots(s.pool, s.shots, batch.seed, row) for row in range(len(batch.items))]
        prompts = [instruction_prompt([e["instruction"] for e in x], s.t) for x in shown]
        ids = [f"i{item:06d}" for item in batch.items]
        lm, outs = s.run(ctx, prompts, ids, batch.seed, bar)
        records = []
        for rid, prompt, out in zip(ids, prompts, outs):
            cleaned = classify(out.text, out.stopped_by, s.t, "instruction", _specials(lm))
            ins = parse_instruction(cleaned, s.t)
            records.append({
                "id": rid, "stage": "instructions", "instruction": ins, "text": cleaned.text,
                "class": cleaned.cls, "keep": cleaned.cls == "clean" and ins is not None,
                **_output_fields(out, prompt),
                "provenance": provenance(ctx, s.model_hash, batch.seed, settings),
            })
        batch.write(records)
        written += records
    bar.close()
    records = own_records(ctx, written)
    selected, dups = usable_instructions(records)
    return {**_generation_metrics(records, len(selected)), "duplicates": dups}


def generate_responses(ctx: Any) -> dict[str, float]:
    """Few-shot answers to the source's usable instructions, each classified."""
    p = Params(ctx, PHASE_KEYS["generate_responses"])
    stages = ("instruction_critic", "instructions")
    source = p.get("source") or default_source(ctx, stages, ctx.phase)
    instructions, _ = usable_instructions(list(ctx.input(source)))
    s = _Setup(ctx, p, 0.7, 128, ("instruction", "response"))
    batch_size = p.integer("batch_size", 8, 1)
    settings = {"source": source, "batch_size": batch_size, **s.settings}
    items = [{"id": r["id"], "instruction": r["instruction"]} for r in instructions]
    written: list[dict[str, Any]] = []
    bar = progress(ctx, len(items), f"{ctx.phase}: generate")
    for batch in ctx.batches(_share(ctx, items), batch_size):
        shown = [pick_shots(s.pool, s.shots, batch.seed, row) for row in range(len(batch.items))]
        prompts = [
            response_prompt([(e["instruction"], e["response"]) for e in x], it["instruction"], s.t)
            for x, it in zip(shown, batch.items)
        ]
        lm, outs = s.run(ctx, prompts, [it["id"] for it in batch.items], batch.seed, bar)
        records = []
        for it, prompt, out in zip(batch.items, prompts, outs):
            cleaned = classify(out.text, out.stopped_by, s.t, "response", _specials(lm))
            resp = cleaned.text or None
            n_resp = len(lm.tokenizer.encode(resp, add_special_tokens=False)) if resp else 0
            records.append({
                "id": it["id"], "stage": "responses", "instruction": it["instruction"],
                "response": resp, "text": cleaned.text, "class": cleaned.cls,
                "keep": cleaned.cls == "clean" and resp is not None, "response_tokens": n_resp,
                **_output_fields(out, prompt),
                "provenance": provenance(ctx, s.model_hash, batch.seed, settings),
            })
        batch.write(records)
        written += records
    bar.close()
    records = own_records(ctx, written)
    return _generation_metrics(records, sum(1 for r in records if r["keep"]))


def _critic_items(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    if kind == "instruction":
        usable, _ = usable_instructions(records)
        return [{"id": r["id"], "instruction": r["instruction"]} for r in usable]
    return [
        {"id": r["id"], "instruction": r["instruction"], "response": r["response"]}
        for r in records
        if r.get("response") and r.get("keep", True)
    ]


def critic_filter(ctx: Any) -> dict[str, float]:
    """Score each source record with the debiased A/B critic; keep all, accept p_yes >= threshold.

    Then score the probe set (`probes.py`, never written as records) and report how well the
    critic tells planted good from planted bad items; `probes.json` beside the records holds
    the probe items' scores, and the reason when the set is too small for a figure.
    """
    p = Params(ctx, PHASE_KEYS["critic_filter"])
    source = p.get("source") or default_source(ctx, ("responses", "instructions"), ctx.phase)
    records = list(ctx.input(source))
    kind = p.get("kind") or ("pair" if stage_of(records) == "responses" else "instruction")
    if kind not in ("instruction", "pair"):
        raise PhaseError(ctx.phase, f"with.kind must be instruction or pair, got {kind!r}")
    threshold = p.number("confidence_threshold", 0.5, 0.0, 1.0)
    labels = [str(x) for x in p.get("labels", [" A", " B"])]
    debias = p.get("debias", True)
    if not isinstance(debias, bool):
        raise PhaseError(ctx.phase, f"with.debias must be true or false, got {debias!r}")
    probe_limit = p.integer("probes", 24, 0)
    t = templates_from(p.get("templates"), ctx.phase, labels=labels)
    spec = model_spec(ctx, p)
    tok = load_tokenizer(spec, ctx.phase)  # a tokenizer, not the model
    label_ids = critic_lib.label_token_ids(tok, labels, ctx.phase)  # fail before any scoring
    fewshot = p.get("fewshot")
    need = ("instruction", "response") if kind == "pair" else ("instruction",)
    spec_dir = getattr(ctx, "spec_dir", None)
    pool = load_fewshot(fewshot, spec_dir, need, ctx.phase) if fewshot else []
    unlabelled = [n for n, e in enumerate(pool, 1) if "label" not in e and "accept" not in e]
    if unlabelled:
        raise PhaseError(ctx.phase, f"few-shot file {fewshot}: example(s) {unlabelled} have "
                         "neither `label` (A/B) nor `accept` (true/false)")
    shots = p.integer("shots", 4 if pool else 0, 0)
    batch_size = p.integer("batch_size", 16, 1)
    fp = model_fingerprint(spec, ctx.phase)
    device = resolve_device(spec.get("device"), ctx.phase)
    dtype = resolve_dtype(spec.get("dtype"), device, ctx.phase)
    model_key = f"{fp.model_hash}:{dtype}:{device.type}"  # scores differ by dtype and device
    judge = CriticJudge(
        ctx.phase, kind, t, labels, label_ids, pool, [example_accepted(e, t) for e in pool],
        shots, debias, tok, chat_denylist(tok), critic_lib.ScoreCache(ctx.cache_dir / "critic"),
        model_key, _Model(ctx, spec).get, ctx.log)
    settings = {"source": source, "kind": kind, "confidence_threshold": threshold,
                "labels": labels, "shots": shots, "fewshot": fewshot, "debias": debias,
                "probes": probe_limit, "fewshot_sha256": _pool_sha256(pool),
                "batch_size": batch_size}
    items = _critic_items(records, kind)
    written: list[dict[str, Any]] = []
    hits = 0
    bar = progress(ctx, len(items), f"{ctx.phase}: score")
    for batch in ctx.batches(_share(ctx, items), batch_size):
        shown = judge.row_shots(batch.seed, len(batch.items))
        ids = [f"{ctx.phase}/{it['id']}" for it in batch.items]
        out = []
        for it, scored in zip(batch.items, judge.judge(batch.items, shown, ids)):
            hits += scored.cached
            ok = scored.judgement.p_yes >= threshold
            out.append({
                **it, "stage": f"{kind}_critic", **scored.fields(), "debiased": debias,
                "verdict": "accept" if ok else "reject", "keep": ok,
                "provenance": provenance(ctx, fp.model_hash, batch.seed, settings),
            })
        batch.write(out)
        written += out
        bar.update(len(out))
    bar.close()
    scored_records = own_records(ctx, written)
    accepted = sum(1 for r in scored_records if r["keep"])
    metrics: dict[str, float] = {
        "scored": len(scored_records), "accepted": accepted,
        "rejected": len(scored_records) - accepted,
        "acceptance": accepted / len(scored_records) if scored_records else 0.0,
        "count": accepted}
    raw = [Judgement(r["p_a"], r.get("p_a_swapped")) for r in scored_records]
    bias = label_bias(raw)
    if bias is not None:
        metrics["label_bias"] = bias
    if getattr(ctx, "shard", None) in (None, 0):  # one probe set per phase, not per shard
        report = judge.probe(items, ctx.seed, probe_limit, threshold)
        (Path(ctx.output_dir) / PROBES_FILE).write_text(json.dumps(report, indent=1) + "\n")
        metrics.update({k: float(report[k]) for k in ("probe_auc", "probe_accuracy")
                        if report.get(k) is not None})
        metrics.update(probe_good=report["good"], probe_bad=report["bad"])
        if report["left_out"]:
            ctx.log.warning("critic_probe_left_out", phase=ctx.phase, reason=report["left_out"])
    # Counted in items of this call (an item is a hit when every label order was cached).
    metrics.update(cache_hits=hits, cache_misses=len(written) - hits)
    ctx.log.info("critic_scored", phase=ctx.phase, scored=len(written), cache_hits=hits,
                 **{k: round(v, 4) for k, v in metrics.items() if k.startswith(("probe", "label"))})
    return metrics
