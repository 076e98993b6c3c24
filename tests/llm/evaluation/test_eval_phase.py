"""The `evaluate` phase on tiny-base and a real LoRA adapter, through the real PhaseContext."""

import pytest
from evalhelpers import LIMIT, TINY_BASE, make_ctx, sft_records

from runner.errors import PhaseError
from runner.llm.decoding.generation import SamplingParams, generate
from runner.llm.evaluation.mcnemar import mcnemar_exact, mcnemar_one_sided
from runner.llm.evaluation.phase import evaluate
from runner.llm.evaluation.verifiable import check
from runner.llm.loading import loader
from runner.llm.text.cleaning import cut
from runner.llm.text.sft_format import sft_prompt
from runner.llm.text.templates import DEFAULT_TEMPLATES as T
from runner.phases.registry import resolve_uses

METRICS = ["base_pass_rate", "discordant_b", "discordant_c", "improved", "improvement", "items",
           "mcnemar_p", "p_improved", "p_regressed", "regressed", "sft_pass_rate", "significant"]


def test_evaluate_is_a_builtin_phase():
    """`uses: evaluate` resolves to the phase function."""
    assert resolve_uses("evaluate") is evaluate


def test_metrics_are_the_documented_ones(evaluated):
    """The phase returns exactly the documented metrics (two-sided and directional)."""
    assert sorted(evaluated.metrics) == METRICS


def test_one_record_per_item_in_set_order(evaluated):
    """`limit: 12` writes one record for each of the set's first 12 items, in order."""
    assert [r["id"] for r in evaluated.records] == [f"ev{n:04d}" for n in range(LIMIT)]


def test_items_metric_counts_records(evaluated):
    """`items` is the number of records."""
    assert evaluated.metrics["items"] == len(evaluated.records) == LIMIT


def test_discordant_counts_match_records(evaluated):
    """b and c are the base-only and tuned-only passes of the records."""
    recs = evaluated.records
    b = sum(1 for r in recs if r["base_pass"] and not r["sft_pass"])
    c = sum(1 for r in recs if r["sft_pass"] and not r["base_pass"])
    assert (evaluated.metrics["discordant_b"], evaluated.metrics["discordant_c"]) == (b, c)


def test_pass_rates_match_records(evaluated):
    """The pass rates are the records' pass fractions."""
    recs = evaluated.records
    n = len(recs)
    rates = (sum(r["base_pass"] for r in recs) / n, sum(r["sft_pass"] for r in recs) / n)
    assert (evaluated.metrics["base_pass_rate"], evaluated.metrics["sft_pass_rate"]) == rates


def test_p_value_and_significance_follow_the_counts(evaluated):
    """mcnemar_p is the exact test of (b, c); significant is p < 0.01."""
    m = evaluated.metrics
    p = mcnemar_exact(int(m["discordant_b"]), int(m["discordant_c"]))
    assert (m["mcnemar_p"], m["significant"]) == (p, int(p < 0.01))


def test_verdicts_recompute_from_saved_outputs(evaluated):
    """Every saved pass/fail equals its checker re-run on the saved output."""
    assert all(
        r["base_pass"] == check(r["checker"], r["base_output"], r["args"])
        and r["sft_pass"] == check(r["checker"], r["sft_output"], r["args"])
        for r in evaluated.records
    )


def test_records_carry_provenance_with_the_adapter(evaluated):
    """Each record names the run, the base model hash and the adapter it evaluated."""
    prov = evaluated.records[0]["provenance"]
    assert (prov["phase"], prov["params"]["adapter_dir"], prov["params"]["adapter_from"],
            prov["params"]["temperature"]) == ("evaluate", str(evaluated.adapter), "sft", 0.0)


def test_tuned_outputs_come_from_the_adapter(evaluated):
    """The plain base model answers the same SFT prompts differently from the tuned one."""
    lm = loader.load_model({"path": str(TINY_BASE)})
    prompts = [sft_prompt(r["instruction"]) for r in evaluated.records]
    outs = generate(lm, lm.encode(prompts), SamplingParams(temperature=0.0, max_new_tokens=96,
                    repetition_penalty=1.0, stop_strings=T.stop_strings), seed=0)
    plain = [cut(o.text, T)[0] for o in outs]
    assert plain != [r["sft_output"] for r in evaluated.records]


def test_shared_base_model_is_not_changed(evaluated):
    """The memoised base model holds no LoRA layer after the phase."""
    lm = loader.load_model({"path": str(TINY_BASE)})
    assert [n for n, _ in lm.model.named_modules() if "lora" in n.lower()] == []


def test_resume_with_everything_committed_loads_no_model(evaluated):
    """Run again on the same folder: no model loads, the metrics are the same."""
    loader.clear_models()
    before = loader.load_count()
    ctx = make_ctx(evaluated.root, {"adapter_from": "sft", "limit": LIMIT, "batch_size": 5},
                   sft_records(evaluated.adapter))
    assert (evaluate(ctx), loader.load_count()) == (evaluated.metrics, before)


def test_adapter_dir_given_directly(tmp_path, evaluated):
    """`adapter_dir:` names the adapter without any sft phase: the tuned answers are the same."""
    ctx = make_ctx(tmp_path, {"adapter_dir": str(evaluated.adapter), "limit": 3},
                   lambda name: [], inputs=[])
    evaluate(ctx)
    assert [r["sft_output"] for r in ctx.records()] == [
        r["sft_output"] for r in evaluated.records[:3]]


def test_adapter_found_from_earlier_phases_by_default(tmp_path, evaluated):
    """Without adapter_from, the latest earlier phase whose records name an adapter is used."""
    ctx = make_ctx(tmp_path, {"limit": 1}, sft_records(evaluated.adapter), inputs=["sft"])
    evaluate(ctx)
    assert ctx.records()[0]["provenance"]["params"]["adapter_from"] == "sft"


def test_both_adapter_keys_are_refused(tmp_path, adapter):
    """adapter_dir and adapter_from together are an error."""
    ctx = make_ctx(tmp_path, {"adapter_dir": str(adapter), "adapter_from": "sft"},
                   sft_records(adapter))
    with pytest.raises(PhaseError, match="not both"):
        evaluate(ctx)


def test_phase_without_adapter_record_is_refused(tmp_path, adapter):
    """adapter_from naming a phase whose records hold no adapter_dir is an error."""
    ctx = make_ctx(tmp_path, {"adapter_from": "sft"}, lambda name: [{"id": "x"}])
    with pytest.raises(PhaseError, match="no record of phase 'sft' has an adapter_dir"):
        evaluate(ctx)


def test_unknown_with_key_suggests_the_right_one(tmp_path, adapter):
    """A misspelt `with:` key fails with a did-you-mean."""
    ctx = make_ctx(tmp_path, {"adapter_from": "sft", "max_new_token": 8}, sft_records(adapter))
    with pytest.raises(PhaseError, match="did you mean 'max_new_tokens'"):
        evaluate(ctx)


def test_bad_eval_item_is_refused_before_any_model_work(tmp_path, adapter):
    """An eval-set item with an unknown checker fails the phase, naming file and line."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "instruction": "Shout.", "checker": "shout", "args": {}}\n')
    ctx = make_ctx(tmp_path, {"adapter_from": "sft", "eval_set": "bad.jsonl"},
                   sft_records(adapter))
    with pytest.raises(PhaseError, match=r"bad.jsonl:1: unknown checker 'shout'"):
        evaluate(ctx)


def test_tuned_prompt_uses_the_templates_recorded_with_the_adapter(tmp_path, adapter):
    """An sft record's `templates` become the tuned model's prompt format."""
    record = {"adapter_dir": str(adapter), "templates": {"instruction_tag": "### Task:\n"}}
    ctx = make_ctx(tmp_path, {"adapter_from": "sft", "limit": 1}, lambda name: [record])
    evaluate(ctx)
    assert ctx.records()[0]["provenance"]["params"]["sft_templates_from_adapter"] is True


def test_directional_verdict_follows_the_counts(evaluated):
    """improvement, one-sided p-values and improved/regressed follow b, c and alpha."""
    m = evaluated.metrics
    b, c = int(m["discordant_b"]), int(m["discordant_c"])
    want = (m["sft_pass_rate"] - m["base_pass_rate"], mcnemar_one_sided(b, c),
            mcnemar_one_sided(c, b), int(c > b and mcnemar_one_sided(b, c) < 0.01),
            int(b > c and mcnemar_one_sided(c, b) < 0.01))
    assert (m["improvement"], m["p_improved"], m["p_regressed"], m["improved"], m["regressed"]) == want


def test_release_material_is_written(evaluated):
    """headline.md (the verdict in words) and review.md (per-checker rates) are written."""
    out = evaluated.ctx.output_dir
    assert "is the tuned model better?" in (out / "headline.md").read_text()
    assert "| checker | items | base | tuned | change |" in (out / "review.md").read_text()
