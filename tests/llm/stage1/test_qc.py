"""QC metric definitions on hand-made records, and the review material."""

import json

import pytest
from localctx import LocalRun

from runner.errors import PhaseError
from runner.llm.stage1.qc import compute_metrics, qc


def _gen(stage, classes, tokens=None):
    return [{"id": f"i{n}", "stage": stage, "class": c, "instruction": f"task {n}",
             "response": f"answer {n}" if stage == "responses" else None,
             "keep": c == "clean", "tokens": (tokens or [10] * len(classes))[n],
             "provenance": {"params": {"count": 100, "max_new_tokens": 64}}}
            for n, c in enumerate(classes)]


def _critic(stage, p_as, threshold=0.5):
    return [{"id": f"i{n}", "stage": stage, "instruction": f"task {n}", "response": "r", "p_a": p,
             "margin": 0.0, "verdict": "accept" if p >= threshold else "reject", "keep": p >= threshold,
             "provenance": {"params": {"confidence_threshold": threshold}}}
            for n, p in enumerate(p_as)]


INS = _gen("instructions", ["clean", "clean", "leakage", "runaway"])
RESP = _gen("responses", ["clean", "runaway", "token_limit", "token_limit", "leakage"], [5, 9, 64, 64, 7])
IC = _critic("instruction_critic", [0.9, 0.2])
PC = _critic("pair_critic", [0.9, 0.8, 0.1])
ROLES = {"instructions": INS, "instruction_critic": IC, "responses": RESP, "pair_critic": PC}
PHASES = {"gen": INS, "ic": IC, "resp": RESP, "pc": PC}


@pytest.fixture
def metrics():
    """The metrics of the hand-made records."""
    return compute_metrics(ROLES, PHASES)


def test_runaway_rate_is_over_all_responses(metrics):
    """runaway_rate = runaway responses / all response records (1/5)."""
    assert metrics["runaway_rate"] == 0.2


def test_token_limit_rate_is_over_all_responses(metrics):
    """token_limit_rate = token-limit responses / all response records (2/5)."""
    assert metrics["token_limit_rate"] == 0.4


def test_delimiter_leakage_counts_both_generators(metrics):
    """delimiter_leakage counts leakage records of instructions and responses (1 + 1)."""
    assert metrics["delimiter_leakage"] == 2


def test_median_response_tokens_over_all_responses(metrics):
    """median_response_tokens is the median generated tokens of every response (9)."""
    assert metrics["median_response_tokens"] == 9


def test_instruction_acceptance(metrics):
    """instruction_acceptance = accepted / scored by the instruction critic (1/2)."""
    assert metrics["instruction_acceptance"] == 0.5


def test_pair_acceptance(metrics):
    """pair_acceptance = accepted / scored by the pair critic (2/3)."""
    assert metrics["pair_acceptance"] == pytest.approx(2 / 3)


def test_counts_after_every_phase(metrics):
    """count_<phase>: usable unique instructions, then kept records of each later phase."""
    assert [metrics[f"count_{p}"] for p in PHASES] == [2, 1, 1, 2]


def test_metric_without_data_is_missing():
    """A role absent (or empty) leaves its metrics out instead of reporting 0."""
    assert "runaway_rate" not in compute_metrics({"instructions": INS}, {"gen": INS})


def _qc_run(tmp_path, iteration=1):
    run = LocalRun(tmp_path / "run", None)
    for name, recs in PHASES.items():
        run.add_records(name, recs)
    return run, run.run("qc", qc, {}, iteration=iteration)


def test_qc_finds_roles_by_stage(tmp_path):
    """Without `phases`, qc finds each role among the earlier phases by record stage."""
    _, metrics = _qc_run(tmp_path)
    assert metrics["pair_acceptance"] == pytest.approx(2 / 3)


def test_qc_unknown_role_is_an_error(tmp_path):
    """A role name qc does not know is a phase error."""
    run = LocalRun(tmp_path / "run", None)
    with pytest.raises(PhaseError, match=r"with\.phases: unknown key 'instruction'"):
        run.run("qc", qc, {"phases": {"instruction": "gen"}})


def test_review_links_histograms(tmp_path):
    """review.md links both PNG histograms, which exist beside it."""
    run, _ = _qc_run(tmp_path)
    out = run.root / "phases" / "qc.i1"
    text = (out / "review.md").read_text()
    pngs = ("response_tokens.png", "critic_p_a.png")
    assert all(f"]({png})" in text and (out / png).stat().st_size > 0 for png in pngs)


def test_review_shows_accepted_and_rejected_samples(tmp_path):
    """review.md has accepted and rejected samples of each critic (up to five each)."""
    run, _ = _qc_run(tmp_path)
    text = (run.root / "phases" / "qc.i1" / "review.md").read_text()
    heads = ("instruction_critic: 1 accepted", "instruction_critic: 1 rejected",
             "pair_critic: 2 accepted", "pair_critic: 1 rejected")
    assert all(h in text for h in heads)


def test_review_puts_iterations_side_by_side(tmp_path):
    """The QC table shows earlier iterations' metrics next to this one's."""
    run = LocalRun(tmp_path / "run", None)
    for name, recs in PHASES.items():
        run.add_records(name, recs)
    earlier = run.root / "phases" / "qc.i1"
    earlier.mkdir(parents=True)
    (earlier / "metrics.json").write_text(json.dumps({"runaway_rate": 0.209}))
    run.run("qc", qc, {}, iteration=2)
    text = (run.root / "phases" / "qc.i2" / "review.md").read_text()
    assert "| metric | i1 | i2 |" in text and "| runaway_rate | 0.209 | 0.2 |" in text
