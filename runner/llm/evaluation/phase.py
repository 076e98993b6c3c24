"""The `evaluate` built-in phase: base vs tuned model on verifiable instructions, McNemar.

For each item of the evaluation set (`scripts/build_eval_set.py`), both models answer with
deterministic greedy decoding (temperature 0, no repetition penalty, the templates' stop
strings): the base model from a completion-style few-shot prompt (`prompts.response_prompt`,
shots drawn per item from `base_fewshot`), the tuned model from the bare SFT prompt
(`sft_format.sft_prompt`, the format the `sft` phase trained it on). Each answer is cut at its
first stop string (`cleaning.cut`) and judged by the item's checker (`verifiable.py`). One
record per item keeps both outputs and verdicts; the metrics are the pass rates and McNemar's
exact test on the discordant pairs (`mcnemar.py`): two-sided (`mcnemar_p`, `significant`)
and directional (`improvement` = SFT minus base pass rate, `p_improved` / `p_regressed`
one-sided, `improved` = 1 only when the tuned model passes more items and `p_improved` <
`alpha`, `regressed` likewise). `review.md` (per-checker pass rates of both models) and
`headline.md` (the verdict in words, saying so plainly when the tuned model is worse) go into
the release gate's packet (`verdict.py`).

**Which weights.** The base model is the memoised `load_model` one that every built-in phase
shares; it is never touched. The tuned model is a *fresh* load of the same files wrapped by
`peft.PeftModel.from_pretrained`. We chose a second copy over peft's `disable_adapter()` on one
wrapper because peft injects its LoRA layers into the module it wraps, in place: wrapping the
shared model would change it for every later phase of the process, and base outputs from a
disabled adapter would come from peft's code path rather than from the very model the other
phases used. The price is one more copy of the weights while the phase runs; it is dropped at
the end. An adapter trained with QLoRA (on a 4-bit base) is applied to the base in the spec's
dtype, unquantised, as such adapters are deployed. Decoding runs on `get_base_model()` (the LoRA-injected transformers model), not on the
`PeftModel` wrapper, whose `forward` does not take the KV-cache keyword this transformers
version uses, so `generation.generate` drives both models through the same code.

**`with:`** `eval_set` (JSONL, relative to the spec's folder; default the shipped
`fixtures/eval/verifiable.jsonl`), `limit` (the first N items; default all), `batch_size` (16),
`max_new_tokens` (96), `base_fewshot` (JSONL of instruction/response pairs; default the shipped
`fixtures/eval/fewshot.jsonl`), `shots` (3), `adapter_from` (the phase whose last record with
an `adapter_dir` names the adapter; default the latest earlier such phase) or `adapter_dir`
(a folder, relative to the spec's folder), `alpha` (0.01), `templates` (overrides for both
prompts; by default the base prompt uses the defaults and the tuned prompt the `templates` the
sft phase recorded beside its adapter, if any, so it is asked in the format it learned).

**Resume.** All model work is inside `ctx.batches`; both models load lazily, on the first batch
that is not yet committed, so a resumed phase with nothing left to do loads nothing.
"""

from __future__ import annotations

import gc
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from runner.errors import PhaseError
from runner.llm.builtin import (
    input_names,
    model_spec,
    options_of,
    own_records,
    progress,
    provenance,
    template_overrides,
)
from runner.llm.decoding.generation import SamplingParams, generate
from runner.llm.evaluation.mcnemar import discordant, mcnemar_exact, mcnemar_one_sided
from runner.llm.evaluation.options import DEFAULT_EVAL_SET, DEFAULT_FEWSHOT, EvaluateOptions, read_eval_set
from runner.llm.evaluation.verdict import write_verdict
from runner.llm.evaluation.verifiable import check
from runner.llm.loading.loader import LoadedModel, load_model, model_fingerprint
from runner.llm.text.cleaning import cut
from runner.llm.text.prompts import load_fewshot, pick_shots, response_prompt, templates_from
from runner.llm.text.sft_format import sft_prompt
from runner.llm.text.templates import Templates

__all__ = ["DEFAULT_EVAL_SET", "DEFAULT_FEWSHOT", "evaluate", "load_eval_set"]

_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _resolve(path: str | Path, spec_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or spec_dir is None else Path(spec_dir) / p


def load_eval_set(path: Path, phase: str) -> tuple[list[dict[str, Any]], str]:
    """The items of an eval-set JSONL file (checkers and args validated) and its sha256."""
    try:
        return read_eval_set(path)
    except ValueError as exc:
        raise PhaseError(phase, str(exc)) from None


def _adapter_record(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    # The last record naming one: a phase that records checkpoints lists the final one last.
    found = [r for r in records if isinstance(r, dict) and r.get("adapter_dir")]
    return found[-1] if found else None


def _find_adapter(ctx: Any, o: EvaluateOptions) -> tuple[Path, str | None, dict[str, Any]]:
    """The adapter folder (from `adapter_dir`, `adapter_from`, or the latest earlier phase
    whose records name one), the phase it came from, and that phase's record (or {})."""
    phase = str(ctx.phase)
    source: str | None = o.adapter_from
    record: dict[str, Any] | None = None
    if o.adapter_dir is not None:
        record = {"adapter_dir": o.adapter_dir}
        source = None
    elif source is not None:
        record = _adapter_record(list(ctx.input(source)))
        if record is None:
            raise PhaseError(phase, f"no record of phase '{source}' has an adapter_dir")
    else:
        for name in reversed(input_names(ctx)):
            try:
                record = _adapter_record(list(ctx.input(name)))
            except Exception:  # a shell phase without records, a gate: look further back
                continue
            if record is not None:
                source = name
                break
        if record is None:
            raise PhaseError(phase, "with.adapter_from is required: no earlier phase's "
                             "records name an adapter_dir")
    path = _resolve(str(record["adapter_dir"]), getattr(ctx, "spec_dir", None))
    if not (path / "adapter_config.json").is_file():
        raise PhaseError(phase, f"no LoRA adapter (adapter_config.json) in {path}")
    return path.resolve(), source, record


def _sft_templates(ctx: Any, o: EvaluateOptions, record: dict[str, Any], base_t: Templates) -> Templates:
    """The format the adapter was trained in: `with.templates` if given, else the templates
    the sft phase recorded beside its adapter, else the defaults (those of the base prompt)."""
    if o.templates is None and isinstance(record.get("templates"), dict):
        return templates_from(record["templates"], str(ctx.phase))
    return base_t


def _adapter_sha256(folder: Path) -> str:
    files = [folder / n for n in _ADAPTER_FILES if (folder / n).is_file()]
    return _sha256(b"".join(f.name.encode() + b"\0" + _sha256(f.read_bytes()).encode()
                            for f in files))


class _Models:
    """Loads the base (shared) and the tuned (fresh copy + adapter) model on first use."""

    def __init__(self, ctx: Any, spec: dict[str, Any], adapter: Path) -> None:
        self.ctx, self.spec, self.adapter = ctx, spec, adapter
        self.base: LoadedModel | None = None
        self.tuned: LoadedModel | None = None

    def get(self) -> tuple[LoadedModel, LoadedModel]:
        if self.base is None or self.tuned is None:
            from peft import PeftModel  # noqa: PLC0415 - optional extra: imported only when evaluating
            from transformers import AutoModelForCausalLM  # noqa: PLC0415 - transformers loads in seconds; only this branch needs it

            base = load_model(self.spec, self.ctx.phase)
            fresh = AutoModelForCausalLM.from_pretrained(
                base.provenance["resolved_path"], dtype=base.dtype, local_files_only=True,
                trust_remote_code=bool(base.provenance.get("trust_remote_code")))
            wrapped = PeftModel.from_pretrained(fresh.to(base.device), str(self.adapter))  # type: ignore[arg-type]  # as in loader: `to`'s signature is hidden
            wrapped.to(base.device).eval()
            info = {**base.provenance, "adapter_dir": str(self.adapter),
                    "adapter_sha256": _adapter_sha256(self.adapter)}
            self.base = base
            self.tuned = replace(base, model=wrapped.get_base_model(), provenance=info)
            out = Path(self.ctx.output_dir)
            (out / "model.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
            if base.device.type == "cuda":
                self.ctx.mark_cuda()
        return self.base, self.tuned

    def close(self) -> None:
        """Drop the tuned copy (the shared base stays memoised for later phases)."""
        self.tuned = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _answers(lm: LoadedModel, prompts: list[str], ids: list[str], sampling: SamplingParams,
             seed: int, t: Templates, ctx: Any, bar: Any) -> list[tuple[str, Any]]:
    """Greedy answers of `lm`, each cut at its first stop string: (kept text, generation)."""
    token_ids = lm.check_prompts(prompts, ids, ctx.phase)
    outs = generate(lm, token_ids, sampling, seed, on_rows=bar.update, log=ctx.log)
    return [(cut(o.text, t)[0], o) for o in outs]


def _metrics(records: list[dict[str, Any]], alpha: float) -> dict[str, float]:
    n = len(records)
    b, c = discordant((bool(r["base_pass"]), bool(r["sft_pass"])) for r in records)
    p_value = mcnemar_exact(b, c)
    p_improved, p_regressed = mcnemar_one_sided(b, c), mcnemar_one_sided(c, b)
    base_rate = sum(1 for r in records if r["base_pass"]) / n if n else 0.0
    sft_rate = sum(1 for r in records if r["sft_pass"]) / n if n else 0.0
    return {
        "items": n, "base_pass_rate": base_rate, "sft_pass_rate": sft_rate,
        "discordant_b": b, "discordant_c": c, "mcnemar_p": p_value,
        "significant": 1 if p_value < alpha else 0,
        # Directional: `significant` is two-sided and holds for a model made worse too.
        "improvement": sft_rate - base_rate, "p_improved": p_improved,
        "p_regressed": p_regressed,
        "improved": 1 if c > b and p_improved < alpha else 0,
        "regressed": 1 if b > c and p_regressed < alpha else 0,
    }


def evaluate(ctx: Any) -> dict[str, float]:
    """Base vs tuned model on verifiable instructions; pass rates and McNemar's exact test."""
    o = options_of(ctx, EvaluateOptions)
    spec_dir = getattr(ctx, "spec_dir", None)
    eval_path = _resolve(o.eval_set or DEFAULT_EVAL_SET, spec_dir)
    items, eval_sha = load_eval_set(eval_path, ctx.phase)
    if o.limit is not None:
        items = items[: o.limit]  # the set is balanced in every prefix
    alpha, batch_size = o.alpha, o.batch_size
    t = templates_from(template_overrides(o.templates), ctx.phase)
    sampling = SamplingParams(temperature=0.0, top_p=1.0, repetition_penalty=1.0,
                              max_new_tokens=o.max_new_tokens, stop_strings=t.stop_strings)
    fewshot = str(o.base_fewshot or DEFAULT_FEWSHOT)
    pool = load_fewshot(fewshot, spec_dir, ("instruction", "response"), ctx.phase)
    shots = o.shots
    adapter, source, adapter_record = _find_adapter(ctx, o)
    sft_t = _sft_templates(ctx, o, adapter_record, t)
    sft_sampling = replace(sampling, stop_strings=sft_t.stop_strings)
    spec = model_spec(ctx)
    trained_on = adapter_record.get("base_model")
    if trained_on and Path(str(trained_on)).resolve() != Path(str(spec["path"])).resolve():
        ctx.log.warning("adapter_base_model_differs", phase=ctx.phase, adapter=str(adapter),
                        trained_on=str(trained_on), evaluated_on=str(spec["path"]))
    models = _Models(ctx, spec, adapter)
    settings = {
        "eval_set": str(eval_path), "eval_set_sha256": eval_sha, "items": len(items),
        "base_fewshot": fewshot, "shots": shots, "adapter_dir": str(adapter),
        "adapter_from": source, "adapter_sha256": _adapter_sha256(adapter), "alpha": alpha,
        "batch_size": batch_size, "sft_templates_from_adapter": sft_t is not t,
        **sampling.as_dict(),
    }
    model_hash = model_fingerprint(spec, ctx.phase).model_hash
    indexed = [{"row": n, **it} for n, it in enumerate(items)]
    written: list[dict[str, Any]] = []
    bar = progress(ctx, 2 * len(indexed), f"{ctx.phase}: evaluate")
    for batch in ctx.batches(indexed, batch_size):
        base, tuned = models.get()
        # Shots depend on the phase seed and the item's place in the set, not on the batch, so
        # changing batch_size leaves every prompt (and, greedy, every answer) unchanged.
        base_prompts = [
            response_prompt([(e["instruction"], e["response"])
                             for e in pick_shots(pool, shots, ctx.seed, it["row"])],
                            it["instruction"], t)
            for it in batch.items
        ]
        sft_prompts = [sft_prompt(it["instruction"], sft_t) for it in batch.items]
        ids = [f"{ctx.phase}/{it['id']}" for it in batch.items]
        base_out = _answers(base, base_prompts, ids, sampling, batch.seed, t, ctx, bar)
        sft_out = _answers(tuned, sft_prompts, ids, sft_sampling, batch.seed, sft_t, ctx, bar)
        records = []
        for it, (b_text, b_gen), (s_text, s_gen) in zip(batch.items, base_out, sft_out):
            records.append({
                "id": it["id"], "stage": "evaluation", "instruction": it["instruction"],
                "checker": it["checker"], "args": it["args"],
                "base_output": b_text, "base_pass": check(it["checker"], b_text, it["args"]),
                "base_tokens": b_gen.tokens, "base_stopped_by": b_gen.stopped_by,
                "sft_output": s_text, "sft_pass": check(it["checker"], s_text, it["args"]),
                "sft_tokens": s_gen.tokens, "sft_stopped_by": s_gen.stopped_by,
                "provenance": provenance(ctx, model_hash, batch.seed, settings),
            })
        batch.write(records)
        written += records
    bar.close()
    models.close()
    records = own_records(ctx, written)
    metrics = _metrics(records, alpha)
    write_verdict(Path(ctx.output_dir), records, metrics, alpha)
    ctx.log.info("evaluated", phase=ctx.phase, **metrics)
    return metrics
