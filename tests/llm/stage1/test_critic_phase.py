"""critic_filter on a tiny model: both label orders, p_yes verdicts, label_bias, the probe set."""

import json

import pytest

from runner.llm.critic import scoring as critic
from runner.llm.critic.calibration import Judgement, roc_auc
from runner.llm.loading import loader
from runner.llm.stage1.phases import critic_filter

PAIRS = [
    {"id": f"i{n}", "stage": "responses", "instruction": f"Write about topic number {n}.",
     "response": f"Here is a long enough answer about topic number {n} for you.",
     "keep": True, "class": "clean"}
    for n in range(8)
]


@pytest.fixture
def gold(local_run):
    """A balanced labelled pair file: six accepted and six rejected examples."""
    rows = [{"instruction": f"Name {k} fruits.", "response": ", ".join(["apple"] * k),
             "accept": k % 2 == 0} for k in range(2, 14)]
    path = local_run.spec_dir / "gold.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return "gold.jsonl"


def _run(local_run, params, iteration=1):
    local_run.add_records("src", PAIRS)
    metrics = local_run.run("pc", critic_filter, {"source": "src", **params}, iteration=iteration)
    return metrics, local_run.records("pc", iteration)


def test_records_hold_both_orders_and_the_debiased_score(local_run, fresh_loader):
    """Each record has p_a (yes=A), p_a_swapped (yes=B) and p_yes, their debiased mean."""
    _, recs = _run(local_run, {})
    assert all(r["p_yes"] == pytest.approx(Judgement(r["p_a"], r["p_a_swapped"]).p_yes) for r in recs)


def test_verdict_applies_to_p_yes(local_run, fresh_loader):
    """accept exactly when p_yes >= threshold (not the raw p_a)."""
    _, recs = _run(local_run, {"confidence_threshold": 0.5})
    assert all((r["verdict"] == "accept") == (r["p_yes"] >= 0.5) for r in recs)


def test_debias_off_scores_one_order(local_run, fresh_loader):
    """with.debias: false scores yes=A only; p_yes is the raw p_a."""
    _, recs = _run(local_run, {"debias": False})
    assert all("p_a_swapped" not in r and r["p_yes"] == r["p_a"] for r in recs)


def test_label_bias_is_mean_raw_first_label_minus_half(local_run, fresh_loader):
    """label_bias = mean of p_a and p_a_swapped over the records, minus 0.5."""
    metrics, recs = _run(local_run, {})
    raw = [r[k] for r in recs for k in ("p_a", "p_a_swapped")]
    assert metrics["label_bias"] == pytest.approx(sum(raw) / len(raw) - 0.5)


def test_threshold_only_iterate_reuses_both_orders_and_probes(local_run, fresh_loader, gold):
    """A new threshold re-uses every cached score: records and probes, both orders."""
    _run(local_run, {"fewshot": gold, "confidence_threshold": 0.0})
    loader.clear_models()
    loads, forwards = loader.load_count(), critic.forward_calls()
    again, _ = _run(local_run, {"fewshot": gold, "confidence_threshold": 1.0}, iteration=2)
    assert (loader.load_count() - loads, critic.forward_calls() - forwards) == (0, 0)
    assert (again["cache_hits"], again["cache_misses"], again["accepted"]) == (8, 0, 0)


def test_probes_are_scored_but_never_written(local_run, fresh_loader, gold):
    """The probe set gives probe_auc/probe_accuracy; the records are only the source items."""
    metrics, recs = _run(local_run, {"fewshot": gold})
    assert len(recs) == len(PAIRS) and not any("/" in r["id"] for r in recs)
    assert 0.0 <= metrics["probe_auc"] <= 1.0 and 0.0 <= metrics["probe_accuracy"] <= 1.0
    assert (metrics["probe_good"], metrics["probe_bad"]) == (6, 16)


def test_probe_auc_is_recomputable_from_probes_json(local_run, fresh_loader, gold):
    """probes.json holds every probe item's p_yes; the AUC recomputes from them."""
    metrics, _ = _run(local_run, {"fewshot": gold})
    report = json.loads((local_run.root / "phases" / "pc.i1" / "probes.json").read_text())
    good = [i["p_yes"] for i in report["items"] if i["probe"] == "gold"]
    bad = [i["p_yes"] for i in report["items"] if i["probe"] != "gold"]
    assert metrics["probe_auc"] == pytest.approx(roc_auc(good, bad))


def test_gold_items_are_never_their_own_example(local_run, fresh_loader, gold):
    """A held-out gold item's prompt does not show it as a few-shot example."""
    from runner.llm.stage1.critic import CriticJudge  # noqa: F401 - the unit under test

    _run(local_run, {"fewshot": gold, "shots": 11})  # 11 of 12: all but the held-out one
    report = json.loads((local_run.root / "phases" / "pc.i1" / "probes.json").read_text())
    assert report["good"] == 6 and report["left_out"] is None


def test_too_small_probe_set_leaves_the_metric_out(local_run, fresh_loader):
    """Three accepted examples are too few: no probe_auc, and probes.json says why."""
    metrics, _ = _run(local_run, {"fewshot": "fewshot.jsonl"})  # conftest: 3 accepted, 2 rejected
    report = json.loads((local_run.root / "phases" / "pc.i1" / "probes.json").read_text())
    assert "probe_auc" not in metrics and "3 planted good" in report["left_out"]


def test_no_fewshot_leaves_the_metric_out(local_run, fresh_loader):
    """Without a labelled file there is no gold: the reason says to give one."""
    metrics, _ = _run(local_run, {})
    report = json.loads((local_run.root / "phases" / "pc.i1" / "probes.json").read_text())
    assert "probe_auc" not in metrics and "with.fewshot" in report["left_out"]


def test_probes_zero_switches_them_off(local_run, fresh_loader, gold):
    """with.probes: 0 scores no probe and says so."""
    metrics, _ = _run(local_run, {"fewshot": gold, "probes": 0})
    assert "probe_auc" not in metrics and metrics["probe_bad"] == 0


def test_debias_must_be_a_boolean(local_run, fresh_loader):
    """A non-boolean debias fails the phase naming the key."""
    from runner.errors import PhaseError

    with pytest.raises(PhaseError, match=r"with\.debias: Input should be a valid boolean"):
        _run(local_run, {"debias": "yes"})


def test_debias_off_reports_no_label_bias(local_run, fresh_loader):
    """One order alone cannot tell bias from good items: label_bias is left out."""
    metrics, _ = _run(local_run, {"debias": False})
    assert "label_bias" not in metrics
