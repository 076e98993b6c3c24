"""The Stage-1 built-in phases: generate_instructions, generate_responses, critic_filter, qc.

Each is `f(ctx) -> metrics`. All model work happens inside `ctx.batches` loop bodies and
depends only on the batch's items and seed, so a killed phase resumes where it stopped and
writes the same records as an uninterrupted run (on CPU). The model is loaded lazily, on the
first batch that needs it: a resumed phase with nothing left to do, or a critic whose scores
are all cached, loads none. Every generated output is kept as a record, whatever its class,
because QC rates need the failures in their denominators; `keep: true` marks the records a
later phase uses. Each phase's `with:` keys, types and defaults are its model in `options.py`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runner.llm.builtin import (
    default_source,
    model_spec,
    options_of,
    own_records,
    progress,
    provenance,
    stage_of,
    template_overrides,
    usable_instructions,
)
from runner.llm.critic import scoring as critic_lib
from runner.llm.critic.calibration import Judgement, label_bias
from runner.llm.decoding.generation import Generation, SamplingParams, stream
from runner.llm.kernel_prebuild import helper as kernel_prebuild
from runner.llm.kernel_prebuild import plan as kernel_plan
from runner.llm.loading.contamination import chat_denylist
from runner.llm.loading.loader import (
    LoadedModel,
    fingerprint_soon,
    load_model,
    load_tokenizer,
    model_fingerprint,
    resolve_device,
    resolve_dtype,
)
from runner.llm.stage1.critic import PROBES_FILE, CriticJudge
from runner.llm.stage1.options import (
    CriticFilterOptions,
    GenerateInstructionsOptions,
    GenerateResponsesOptions,
)
from runner.llm.stage1.qc import qc
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

__all__ = ["critic_filter", "generate_instructions", "generate_responses", "qc"]


class _Model:
    """Loads the model on first use and tells the engine when it runs on CUDA."""

    def __init__(self, ctx: Any, spec: dict[str, Any]) -> None:
        self.ctx, self.spec = ctx, spec
        self.lm: LoadedModel | None = None

    def get(self) -> LoadedModel:
        if self.lm is None:
            helper = _prebuild_kernels(self.spec, self.ctx.phase)
            self.lm = load_model(self.spec, self.ctx.phase)
            if helper is not None:
                # Its workers build the rest in parallel: sooner than the first call would,
                # one kernel after another. Bounded, should the helper hang.
                helper.finish(_PREBUILD_WAIT_S)
            # The full provenance (hashes, dtype, device, chat template removed, sentinel)
            # beside the records, which carry only the model hash.
            path = Path(self.ctx.output_dir) / "model.json"
            path.write_text(json.dumps(self.lm.provenance, indent=2, sort_keys=True) + "\n")
            if self.lm.device.type == "cuda" and hasattr(self.ctx, "mark_cuda"):
                self.ctx.mark_cuda()
        return self.lm


# The helper takes ~5 s on an H200 host, about what the first call would spend building; one
# still running well past that is stuck, and the first call builds what is missing itself.
_PREBUILD_WAIT_S = 15.0


def _prebuild_kernels(spec: dict[str, Any], phase: str) -> kernel_prebuild.Prebuild | None:
    # The Triton kernels of this model's shape are built in a helper process while the model
    # loads (runner/llm/kernel_prebuild); this reads only config.json. Anything amiss here is for
    # load_model to report: the first call then builds the kernels itself.
    try:
        device = resolve_device(spec.get("device"), phase)
        if device.type != "cuda":
            return None
        config = kernel_plan.read_config(str(spec["path"]))
        if config is None:  # a hub id: its cached config, through transformers
            from transformers import AutoConfig  # noqa: PLC0415 - transformers loads in seconds

            config = AutoConfig.from_pretrained(
                str(spec["path"]), local_files_only=True,
                trust_remote_code=bool(spec.get("trust_remote_code")))
        return kernel_prebuild.start_for(config, resolve_dtype(spec.get("dtype"), device, phase),
                                         device)
    except Exception:
        return None


class _Setup:
    """What both generators read from `with:`: templates, sampling, few-shot pool, model."""

    def __init__(
        self, ctx: Any, o: GenerateInstructionsOptions | GenerateResponsesOptions,
        need: tuple[str, ...],
    ) -> None:
        self.t: Templates = templates_from(template_overrides(o.templates), ctx.phase)
        self.sampling = SamplingParams(
            temperature=o.temperature, top_p=o.top_p, repetition_penalty=o.repetition_penalty,
            max_new_tokens=o.max_new_tokens, stop_strings=self.t.stop_strings,
        )
        self.shots = o.shots
        self.draw = o.fewshot_draw
        # Decoding slots of the static engine (rows in flight at once, from several batches);
        # by default the phase's batch_size. Outputs do not depend on it.
        self.slots = o.slots
        self.fewshot = o.fewshot
        self.pool = load_fewshot(self.fewshot, getattr(ctx, "spec_dir", None), need, ctx.phase)
        spec = model_spec(ctx)
        self.spec = spec
        self.model = _Model(ctx, spec)
        # The weights are hashed on a thread while the model loads and the rows generate;
        # the first record written waits for it (`model_hash`).
        self._fingerprint = fingerprint_soon(spec, ctx.phase)
        self.settings: dict[str, Any] = {"shots": self.shots, "fewshot": self.fewshot,
                                         "fewshot_draw": self.draw,
                                         "fewshot_sha256": _pool_sha256(self.pool),
                                         **self.sampling.as_dict()}

    @property
    def model_hash(self) -> str:
        """The model's hash for the records' provenance (waits for the hashing thread)."""
        return self._fingerprint.result().model_hash

    def shown(self, batch: Any) -> list[list[dict[str, Any]]]:
        """The few-shot examples of each row of `batch`: drawn per row, or once per batch
        (`fewshot_draw: batch`: every row shows the same ones, so rows share one prompt
        prefix and the engine prefills it once)."""
        if self.draw == "batch":
            return [pick_shots(self.pool, self.shots, batch.seed, -1)] * len(batch.items)
        return [pick_shots(self.pool, self.shots, batch.seed, row)
                for row in range(len(batch.items))]

    def stream(
        self, ctx: Any, pending: Iterator[tuple[Any, list[str], list[str]]], bar: Any,
        batch_size: int,
    ) -> Iterator[tuple[Any, list[str], LoadedModel, list[Generation]]]:
        """Generate the prompts of every pending batch, `(batch, prompts, ids)`; yield
        `(batch, prompts, model, outputs)` per batch, in order, once its last row finished.

        The rows of several batches share the engine's `slots` (continuous refill on CUDA),
        so the caller commits each batch as it comes back. The model loads only when some
        batch is pending; prompts are checked for chat tokens before they are generated.
        """
        first = next(pending, None)
        if first is None:
            return
        lm = self.model.get()

        def work() -> Iterator[tuple[tuple[Any, list[str]], list[list[int]], int]]:
            for batch, prompts, ids in itertools.chain([first], pending):
                yield (batch, prompts), _encoded(lm, ctx.phase, prompts, ids), batch.seed

        for (batch, prompts), outs in stream(lm, work(), self.sampling, self.slots or batch_size,
                                             on_rows=bar.update, log=ctx.log):
            yield batch, prompts, lm, outs



def _encoded(lm: LoadedModel, phase: str, prompts: list[str], ids: list[str]
             ) -> list[list[int]]:
    """The prompts' token ids, checked for chat tokens: each distinct prompt encoded and
    checked once (the rows of a batch with `fewshot_draw: batch` share one), its rows sharing
    that one list."""
    first: dict[str, int] = {}
    for n, prompt in enumerate(prompts):
        first.setdefault(prompt, n)
    distinct = list(first)
    encoded = lm.check_prompts(distinct, [f"{phase}/{ids[first[x]]}" for x in distinct], phase)
    by_prompt = dict(zip(distinct, encoded))
    return [by_prompt[x] for x in prompts]


class _Outputs:
    """What every record of a phase repeats, computed once: the model's special-token
    strings and each distinct prompt's sha256."""

    def __init__(self) -> None:
        self._specials: tuple[str, ...] | None = None
        self._sha: dict[str, str] = {}

    def specials(self, lm: LoadedModel) -> tuple[str, ...]:
        if self._specials is None:
            self._specials = _specials(lm)
        return self._specials

    def fields(self, out: Generation, prompt: str) -> dict[str, Any]:
        sha = self._sha.get(prompt)
        if sha is None:
            if len(self._sha) > 4096:  # rows of one batch share prompts; older ones are done
                self._sha.clear()
            sha = self._sha[prompt] = hashlib.sha256(prompt.encode()).hexdigest()
        return {"raw": out.text, "tokens": out.tokens, "hit_token_limit": out.hit_token_limit,
                "stopped_by": out.stopped_by, "prompt_sha256": sha}


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


def _generation_metrics(records: list[dict[str, Any]], kept: int) -> dict[str, float]:
    n = len(records)
    classes = Counter(r["class"] for r in records)
    metrics: dict[str, float] = {"generated": n, "count": kept,
                                 "tokens": sum(int(r.get("tokens") or 0) for r in records)}
    metrics.update({cls: classes.get(cls, 0) for cls in CLASSES})
    metrics["runaway_rate"] = classes.get("runaway", 0) / n if n else 0.0
    metrics["token_limit_rate"] = classes.get("token_limit", 0) / n if n else 0.0
    return metrics


def generate_instructions(ctx: Any) -> dict[str, float]:
    """Few-shot instruction generation: ceil(count * oversample) samples, each classified."""
    o = options_of(ctx, GenerateInstructionsOptions)
    count, oversample, batch_size = o.count, o.oversample, o.batch_size
    s = _Setup(ctx, o, ("instruction",))
    settings = {"count": count, "oversample": oversample, "batch_size": batch_size, **s.settings}
    total = math.ceil(count * oversample)
    written: list[dict[str, Any]] = []
    share = _share(ctx, range(total))
    bar = progress(ctx, len(share), f"{ctx.phase}: generate", done=len(own_records(ctx, [])))

    def pending() -> Iterator[tuple[Any, list[str], list[str]]]:
        for batch in ctx.open_batches(share, batch_size):
            prompts = [instruction_prompt([e["instruction"] for e in x], s.t)
                       for x in s.shown(batch)]
            yield batch, prompts, [f"i{item:06d}" for item in batch.items]

    fields = _Outputs()
    for batch, prompts, lm, outs in s.stream(ctx, pending(), bar, batch_size):
        records = []
        specials = fields.specials(lm)
        for item, prompt, out in zip(batch.items, prompts, outs):
            cleaned = classify(out.text, out.stopped_by, s.t, "instruction", specials)
            ins = parse_instruction(cleaned, s.t)
            records.append({
                "id": f"i{item:06d}", "stage": "instructions", "instruction": ins,
                "text": cleaned.text, "class": cleaned.cls,
                "keep": cleaned.cls == "clean" and ins is not None,
                **fields.fields(out, prompt),
                "provenance": provenance(ctx, s.model_hash, batch.seed, settings),
            })
        batch.write(records)
        ctx.commit(batch)  # its last row has finished: durable now, exactly once
        written += records
    bar.close()
    records = own_records(ctx, written)
    selected, dups = usable_instructions(records)
    return {**_generation_metrics(records, len(selected)), "duplicates": dups}


def generate_responses(ctx: Any) -> dict[str, float]:
    """Few-shot answers to the source's usable instructions, each classified."""
    o = options_of(ctx, GenerateResponsesOptions)
    stages = ("instruction_critic", "instructions")
    source = o.source or default_source(ctx, stages, ctx.phase)
    instructions, _ = usable_instructions(list(ctx.input(source)))
    s = _Setup(ctx, o, ("instruction", "response"))
    batch_size = o.batch_size
    settings = {"source": source, "batch_size": batch_size, **s.settings}
    items = [{"id": r["id"], "instruction": r["instruction"]} for r in instructions]
    written: list[dict[str, Any]] = []
    share = _share(ctx, items)
    bar = progress(ctx, len(share), f"{ctx.phase}: generate", done=len(own_records(ctx, [])))

    def pending() -> Iterator[tuple[Any, list[str], list[str]]]:
        for batch in ctx.open_batches(share, batch_size):
            prompts = [
                response_prompt([(e["instruction"], e["response"]) for e in x],
                                it["instruction"], s.t)
                for x, it in zip(s.shown(batch), batch.items)
            ]
            yield batch, prompts, [it["id"] for it in batch.items]

    fields = _Outputs()
    for batch, prompts, lm, outs in s.stream(ctx, pending(), bar, batch_size):
        records = []
        specials = fields.specials(lm)
        for it, prompt, out in zip(batch.items, prompts, outs):
            cleaned = classify(out.text, out.stopped_by, s.t, "response", specials)
            resp = cleaned.text or None
            n_resp = len(lm.tokenizer.encode(resp, add_special_tokens=False)) if resp else 0
            records.append({
                "id": it["id"], "stage": "responses", "instruction": it["instruction"],
                "response": resp, "text": cleaned.text, "class": cleaned.cls,
                "keep": cleaned.cls == "clean" and resp is not None, "response_tokens": n_resp,
                **fields.fields(out, prompt),
                "provenance": provenance(ctx, s.model_hash, batch.seed, settings),
            })
        batch.write(records)
        ctx.commit(batch)  # its last row has finished: durable now, exactly once
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
    o = options_of(ctx, CriticFilterOptions)
    source = o.source or default_source(ctx, ("responses", "instructions"), ctx.phase)
    records = list(ctx.input(source))
    kind = o.kind or ("pair" if stage_of(records) == "responses" else "instruction")
    threshold = o.confidence_threshold
    labels = list(o.labels)
    debias, probe_limit = o.debias, o.probes
    t = templates_from(template_overrides(o.templates), ctx.phase, labels=labels)
    spec = model_spec(ctx)
    tok = load_tokenizer(spec, ctx.phase)  # a tokenizer, not the model
    label_ids = critic_lib.label_token_ids(tok, labels, ctx.phase)  # fail before any scoring
    fewshot = o.fewshot
    need = ("instruction", "response") if kind == "pair" else ("instruction",)
    spec_dir = getattr(ctx, "spec_dir", None)
    pool = load_fewshot(fewshot, spec_dir, need, ctx.phase, labelled=True) if fewshot else []
    shots = o.shots if o.shots is not None else (4 if pool else 0)
    batch_size = o.batch_size
    fp = model_fingerprint(spec, ctx.phase)
    device = resolve_device(spec.get("device"), ctx.phase)
    dtype = resolve_dtype(spec.get("dtype"), device, ctx.phase)
    model_key = f"{fp.model_hash}:{dtype}:{device.type}"  # scores differ by dtype and device
    cache = critic_lib.ScoreCache.for_phase(ctx.cache_dir, ctx.phase, getattr(ctx, "shard", None))
    judge = CriticJudge(
        ctx.phase, kind, t, labels, label_ids, pool, [example_accepted(e, t) for e in pool],
        shots, debias, tok, chat_denylist(tok), cache, model_key, _Model(ctx, spec).get, ctx.log)
    settings = {"source": source, "kind": kind, "confidence_threshold": threshold,
                "labels": labels, "shots": shots, "fewshot": fewshot, "debias": debias,
                "probes": probe_limit, "fewshot_sha256": _pool_sha256(pool),
                "batch_size": batch_size}
    items = _critic_items(records, kind)
    written: list[dict[str, Any]] = []
    hits = 0
    share = _share(ctx, items)
    bar = progress(ctx, len(share), f"{ctx.phase}: score", done=len(own_records(ctx, [])))
    for batch in ctx.batches(share, batch_size):
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
    cache.close()  # after the probe set, which is scored through the same cache
    # Counted in items of this call (an item is a hit when every label order was cached).
    metrics.update(cache_hits=hits, cache_misses=len(written) - hits)
    ctx.log.info("critic_scored", phase=ctx.phase, scored=len(written), cache_hits=hits,
                 **{k: round(v, 4) for k, v in metrics.items() if k.startswith(("probe", "label"))})
    return metrics
