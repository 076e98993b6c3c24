"""The generation phases through the refill engine (static, eager on CPU): commits and draws."""

import pytest
from localctx import Interrupted, LocalRun

from runner.errors import PhaseError
from runner.llm.decoding import fastgen
from runner.llm.decoding.generation import ENGINE_ENV
from runner.llm.loading import loader
from runner.llm.stage1.phases import generate_instructions

GEN = {"count": 6, "oversample": 1.0, "batch_size": 2, "slots": 3, "fewshot": "fewshot.jsonl",
       "max_new_tokens": 8, "temperature": 1.0, "top_p": 0.9}


@pytest.fixture(autouse=True)
def static_engine(monkeypatch):
    """The phases' generation through the static engine's refill loop."""
    monkeypatch.setenv(ENGINE_ENV, "static")
    fastgen.clear_runners()


def _files(run):
    return [(p.name, p.read_bytes()) for p in sorted(run.root.glob("phases/gen.i1/batches/*"))]


def test_refill_records_equal_the_simple_batches_layout(tmp_path, tiny_model, fewshot,
                                                        fresh_loader):
    """Rows of 3 batches share 3 slots; each batch is its own committed file, in order."""
    run = LocalRun(tmp_path / "a", {"path": str(tiny_model)}, spec_dir=fewshot.parent)
    run.run("gen", generate_instructions, GEN)
    assert [name for name, _ in _files(run)] == ["000000.jsonl", "000001.jsonl", "000002.jsonl"]
    assert [r["id"] for r in run.records("gen", 1)] == [f"i{n:06d}" for n in range(6)]


def test_slots_do_not_change_records(tmp_path, tiny_model, fewshot, fresh_loader):
    """One slot or five: byte-identical batch files."""
    runs = []
    for slots in (1, 5):
        run = LocalRun(tmp_path / str(slots), {"path": str(tiny_model)}, spec_dir=fewshot.parent)
        run.run("gen", generate_instructions, {**GEN, "slots": slots})
        runs.append(_files(run))
    assert runs[0] == runs[1]


def test_interrupted_refill_run_resumes_to_identical_records(tmp_path, tiny_model, fewshot,
                                                             fresh_loader):
    """Stopped after one commit with rows of later batches in flight, then resumed: the same."""
    whole = LocalRun(tmp_path / "a", {"path": str(tiny_model)}, spec_dir=fewshot.parent)
    whole.run("gen", generate_instructions, GEN)
    broken = LocalRun(tmp_path / "b", {"path": str(tiny_model)}, spec_dir=fewshot.parent)
    with pytest.raises(Interrupted):
        broken.run("gen", generate_instructions, GEN, stop_after=1)
    assert len(_files(broken)) == 1
    loader.clear_models()
    fastgen.clear_runners()
    broken.run("gen", generate_instructions, GEN)
    assert _files(whole) == _files(broken)


def test_fewshot_drawn_per_batch_shares_one_prompt(tmp_path, tiny_model, fewshot, fresh_loader):
    """`fewshot_draw: batch`: every row of a batch has one prompt; recorded in provenance."""
    run = LocalRun(tmp_path / "a", {"path": str(tiny_model)}, spec_dir=fewshot.parent)
    run.run("gen", generate_instructions, {**GEN, "fewshot_draw": "batch", "shots": 2})
    records = run.records("gen", 1)
    by_batch: dict[int, set[str]] = {}
    for r in records:
        by_batch.setdefault(r["provenance"]["batch_seed"], set()).add(r["prompt_sha256"])
    assert [len(v) for v in by_batch.values()] == [1, 1, 1]
    assert len({h for v in by_batch.values() for h in v}) > 1  # batches draw their own
    assert records[0]["provenance"]["params"]["fewshot_draw"] == "batch"


def test_fewshot_draw_per_row_is_the_default(tmp_path, tiny_model, fewshot, fresh_loader):
    """By default rows draw their own examples (and provenance says so)."""
    run = LocalRun(tmp_path / "a", {"path": str(tiny_model)}, spec_dir=fewshot.parent)
    run.run("gen", generate_instructions, {**GEN, "shots": 2})
    records = run.records("gen", 1)
    assert records[0]["provenance"]["params"]["fewshot_draw"] == "row"
    assert len({r["prompt_sha256"] for r in records}) > 3


def test_bad_fewshot_draw_is_refused(tmp_path, tiny_model, fewshot, fresh_loader):
    """An unknown draw names the key and the choices."""
    run = LocalRun(tmp_path / "a", {"path": str(tiny_model)}, spec_dir=fewshot.parent)
    with pytest.raises(PhaseError, match=r"with\.fewshot_draw: Input should be .row. or .batch."):
        run.run("gen", generate_instructions, {**GEN, "fewshot_draw": "phase"})


def test_responses_sharing_the_fewshot_block_equal_whole_prefills(tmp_path, tiny_model, fewshot,
                                                                  fresh_loader, monkeypatch):
    """`generate_responses` with `fewshot_draw: batch`: the rows of a batch prefill their
    shared few-shot block once, and the batch files are those of whole prefills, byte for byte."""
    from structlog.testing import capture_logs

    from runner.llm.decoding import refill
    from runner.llm.stage1.phases import generate_responses

    sources = [{"id": f"i{n:06d}", "stage": "instruction_critic", "keep": True,
                "verdict": "accept", "instruction": f"Name {n} fruits{'!' * n}."}
               for n in range(6)]
    params = {"source": "ic", "fewshot": "fewshot.jsonl", "fewshot_draw": "batch", "shots": 2,
              "batch_size": 3, "slots": 4, "max_new_tokens": 8, "temperature": 1.0,
              "top_p": 0.9}
    files, spared = [], []
    for shortest in (0, 8):
        monkeypatch.setattr(refill, "PREFIX_MIN", shortest)
        fastgen.clear_runners()
        run = LocalRun(tmp_path / str(shortest), {"path": str(tiny_model)},
                       spec_dir=fewshot.parent)
        run.add_records("ic", sources)
        with capture_logs() as logs:
            run.run("resp", generate_responses, params)
        spared.append(sum(e.get("prefix_tokens_saved", 0) for e in logs))
        files.append([(p.name, p.read_bytes())
                      for p in sorted(run.root.glob("phases/resp.i1/batches/*"))])
    assert spared[0] == 0 and spared[1] > 0
    assert files[0] == files[1] and len(files[0]) == 2
