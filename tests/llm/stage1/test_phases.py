"""The built-in phases end to end on the tiny model, through the local `ctx` stand-in."""

import json

import pytest
from localctx import Interrupted, LocalRun

from runner.errors import PhaseError
from runner.llm.critic.scoring import LabelError
from runner.llm.loading import loader
from runner.llm.loading.contamination import ContaminationError
from runner.llm.stage1.phases import critic_filter, generate_instructions, generate_responses
from runner.llm.text.cleaning import CLASSES

GEN = {"count": 4, "oversample": 1.5, "batch_size": 2, "fewshot": "fewshot.jsonl",
       "max_new_tokens": 6, "temperature": 1.0}
INSTRUCTIONS = [
    {"id": f"i{n:06d}", "stage": "instruction_critic", "instruction": f"Name {n} fruits.",
     "keep": n != 1, "verdict": "accept" if n != 1 else "reject"}
    for n in range(4)
]


def _records(run: LocalRun, phase: str, iteration: int = 1) -> list[dict]:
    return run.records(phase, iteration)


def test_generate_instructions_writes_every_sample(local_run, fresh_loader):
    """ceil(count * oversample) records, each with exactly one output class."""
    local_run.run("gen", generate_instructions, GEN)
    assert [r["class"] in CLASSES for r in _records(local_run, "gen")] == [True] * 6


def test_records_carry_provenance(local_run, fresh_loader):
    """Every record names run, iteration, phase, spec, commit, model, batch seed and params."""
    local_run.run("gen", generate_instructions, GEN)
    prov = _records(local_run, "gen")[0]["provenance"]
    assert sorted(prov) == ["batch_seed", "git_commit", "iteration", "model_hash", "params",
                            "phase", "run_id", "spec_sha256"]
    assert (prov["params"]["temperature"], prov["params"]["max_new_tokens"]) == (1.0, 6)


def test_generation_metrics_count_classes(local_run, fresh_loader):
    """The phase's metrics count each class over all its records."""
    metrics = local_run.run("gen", generate_instructions, GEN)
    assert sum(metrics[c] for c in CLASSES) == metrics["generated"] == 6


def test_interrupted_and_resumed_run_writes_identical_records(
    tmp_path, tiny_model, fewshot, fresh_loader
):
    """A run stopped after one batch and resumed writes what an uninterrupted run writes."""
    whole = LocalRun(tmp_path / "a", {"path": str(tiny_model)}, spec_dir=fewshot.parent)
    whole.run("gen", generate_instructions, GEN)
    broken = LocalRun(tmp_path / "b", {"path": str(tiny_model)}, spec_dir=fewshot.parent)
    with pytest.raises(Interrupted):
        broken.run("gen", generate_instructions, GEN, stop_after=1)
    loader.clear_models()  # a new process
    broken.run("gen", generate_instructions, GEN)
    def files(run):
        return [(p.name, p.read_bytes()) for p in sorted(run.root.glob("phases/gen.i1/batches/*"))]

    assert files(whole) == files(broken) and len(files(whole)) == 3


def test_resume_with_nothing_left_loads_no_model(local_run, fresh_loader):
    """A phase whose batches are all committed finishes without loading the model."""
    local_run.run("gen", generate_instructions, GEN)
    loader.clear_models()
    before = loader.load_count()
    local_run.run("gen", generate_instructions, GEN)
    assert loader.load_count() == before


def test_unknown_with_key_suggests_the_right_one(local_run):
    """A misspelt `with:` key fails with a did-you-mean."""
    with pytest.raises(PhaseError, match=r"unknown key with\.temprature; did you mean 'temperature'"):
        local_run.run("gen", generate_instructions, {**GEN, "temprature": 0.5})


def test_missing_count_is_an_error(local_run):
    """generate_instructions needs a target count."""
    with pytest.raises(PhaseError, match=r"with\.count is required"):
        local_run.run("gen", generate_instructions, {k: v for k, v in GEN.items() if k != "count"})


def test_contaminated_fewshot_fails_naming_token_and_prompt(tmp_path, chat_model, fresh_loader):
    """A chat token in a few-shot example fails the phase naming the token and prompt id."""
    (tmp_path / "fs.jsonl").write_text(json.dumps({"instruction": "<|im_start|>user hi"}) + "\n")
    run = LocalRun(tmp_path / "run", {"path": str(chat_model)}, spec_dir=tmp_path)
    expected = r"prompt 'gen/i000000' contains the chat-format token '<\|im_start\|>'"
    with pytest.raises(ContaminationError, match=expected):
        run.run("gen", generate_instructions, {**GEN, "fewshot": "fs.jsonl", "shots": 1})


def test_generate_responses_answers_accepted_instructions(local_run, fresh_loader):
    """Responses are generated for the critic's accepted instructions only, in order."""
    local_run.add_records("ic", INSTRUCTIONS)
    params = {"source": "ic", "fewshot": "fewshot.jsonl", "max_new_tokens": 5}
    local_run.run("resp", generate_responses, params)
    assert [r["id"] for r in _records(local_run, "resp")] == ["i000000", "i000002", "i000003"]


def test_generate_responses_finds_source_by_stage(local_run, fresh_loader):
    """Without `source`, the latest earlier instruction critic is read."""
    local_run.add_records("ic", INSTRUCTIONS)
    params = {"fewshot": "fewshot.jsonl", "max_new_tokens": 5}
    metrics = local_run.run("resp", generate_responses, params)
    assert metrics["generated"] == 3


def test_critic_filter_keeps_accepted_and_rejected(local_run, fresh_loader):
    """Every scored record is kept with its verdict on the debiased p_yes; `keep` marks the accepted."""
    local_run.add_records("ic_src", [{**r, "keep": True, "stage": "x"} for r in INSTRUCTIONS])
    params = {"source": "ic_src", "kind": "instruction", "confidence_threshold": 0.5,
              "fewshot": "fewshot.jsonl"}
    local_run.run("ic", critic_filter, params)
    recs = _records(local_run, "ic")
    assert [(r["keep"], r["verdict"] == "accept") for r in recs] == [(r["p_yes"] >= 0.5,) * 2 for r in recs]


def test_critic_filter_multi_token_label_fails_before_scoring(local_run, fresh_loader):
    """A multi-token label fails the phase before any model is loaded."""
    local_run.add_records("src", INSTRUCTIONS)
    before = loader.load_count()
    with pytest.raises(LabelError, match="' Absolutely'"):
        local_run.run("ic", critic_filter, {"source": "src", "labels": [" A", " Absolutely"]})
    assert loader.load_count() == before


def test_critic_on_instruction_generator_dedups(local_run, fresh_loader):
    """An instruction critic over a generator scores its deduplicated, kept instructions."""
    gen = [
        {"id": f"i{n}", "stage": "instructions", "instruction": s, "keep": True,
         "class": "clean", "provenance": {"params": {"count": 10}}}
        for n, s in enumerate(["Sing.", "sing", "Dance."])
    ]
    local_run.add_records("gen", gen)
    metrics = local_run.run("ic", critic_filter, {"source": "gen"})
    assert metrics["scored"] == 2


def test_critic_fewshot_needs_labels(local_run, tmp_path, fresh_loader):
    """Critic few-shot examples without label or accept fail naming them."""
    (local_run.spec_dir / "plain.jsonl").write_text(json.dumps({"instruction": "Sing."}) + "\n")
    local_run.add_records("src", INSTRUCTIONS)
    with pytest.raises(PhaseError, match=r"plain\.jsonl:1: a critic's example needs `label`"):
        local_run.run("ic", critic_filter, {"source": "src", "fewshot": "plain.jsonl"})


def test_pipeline_chains_to_qc(local_run, fresh_loader):
    """instructions -> critic -> responses -> pair critic -> qc, sources found by stage."""
    from runner.llm.stage1.phases import qc

    # The random model never writes a delimiter; common letters as stop strings make most of
    # its outputs end early and clean, so every phase has something to pass on.
    stops = {"stop_strings": [" ", "e", "a", "t", "o", "s"]}
    local_run.run("gen", generate_instructions, {**GEN, "templates": stops, "max_new_tokens": 8})
    local_run.run("ic", critic_filter, {"confidence_threshold": 0.0, "fewshot": "fewshot.jsonl"})
    resp = {"fewshot": "fewshot.jsonl", "max_new_tokens": 8, "templates": stops}
    local_run.run("resp", generate_responses, resp)
    local_run.run("pc", critic_filter, {"confidence_threshold": 0.0})
    metrics = local_run.run("qc", qc, {})
    assert metrics["count_pc"] > 0 and metrics["pair_acceptance"] == 1.0


def test_metrics_after_resume_cover_every_batch(tmp_path, tiny_model, fewshot, fresh_loader):
    """A resumed phase's metrics count the batches of the interrupted process too."""
    run = LocalRun(tmp_path / "run", {"path": str(tiny_model)}, spec_dir=fewshot.parent)
    with pytest.raises(Interrupted):
        run.run("gen", generate_instructions, GEN, stop_after=2)
    assert run.run("gen", generate_instructions, GEN)["generated"] == 6


def test_phase_writes_model_provenance(local_run, fresh_loader):
    """A phase that loads the model writes its provenance to model.json beside the records."""
    local_run.run("gen", generate_instructions, GEN)
    prov = json.loads((local_run.root / "phases" / "gen.i1" / "model.json").read_text())
    assert prov["model_hash"] == _records(local_run, "gen")[0]["provenance"]["model_hash"]
