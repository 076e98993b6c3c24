"""What the console says about a phase or a gate: key metrics, values, checks, commands."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runner.console.summary import (
    MAX_LINE,
    check_rows,
    clip,
    format_duration,
    format_value,
    key_metrics,
    next_commands,
)

GENERATE = {"generated": 80, "count": 40, "clean": 80, "tokens": 888, "runaway_rate": 0.0125, "duplicates": 7}


def test_generate_shows_kept_of_generated_tokens_and_runaways():
    """A generation phase shows kept/generated, tokens and the runaway rate, in that order."""
    assert key_metrics("generate_instructions", GENERATE) == [
        ("kept", "40/80"), ("tokens", "888"), ("runaway_rate", "0.0125")]


def test_critic_shows_acceptance_and_the_self_test_figures_when_present():
    """critic_filter shows acceptance, then label_bias and probe_auc when the phase reports them."""
    metrics = {"scored": 40, "accepted": 30, "acceptance": 0.75, "probe_auc": 0.91234, "label_bias": -0.02}
    assert key_metrics("critic_filter", metrics) == [
        ("acceptance", "0.75"), ("label_bias", "-0.02"), ("probe_auc", "0.9123")]


def test_critic_without_self_test_figures_shows_acceptance_only():
    """Absent metrics are skipped, not shown as missing."""
    assert key_metrics("critic_filter", {"scored": 40, "acceptance": 1.0}) == [("acceptance", "1")]


def test_sharded_critic_shows_acceptance_from_its_summed_counts():
    """A sharded critic's metrics hold accepted and scored sums but no rate: the rate is derived."""
    assert key_metrics("critic_filter", {"shards": 4, "scored": 60, "accepted": 45})[0] == ("acceptance", "0.75")


def test_qc_sft_and_evaluate_show_their_own_figures():
    """qc: runaway rate and median tokens; sft: steps and loss; evaluate: pass rates and improvement."""
    qc = {"runaway_rate": 0.0, "token_limit_rate": 0.1, "median_response_tokens": 14.0, "pair_acceptance": 1.0}
    sft = {"final_loss": 1.23456, "steps": 20, "tokens_per_s": 900.0}
    ev = {"base_pass_rate": 0.25, "sft_pass_rate": 0.5, "improvement": 0.25, "mcnemar_p": 0.03}
    assert [k for k, _ in key_metrics("qc", qc)] == ["runaway_rate", "median_response_tokens", "pair_acceptance"]
    assert key_metrics("sft", sft) == [("steps", "20"), ("final_loss", "1.235")]
    assert key_metrics("evaluate", ev) == [("base_pass_rate", "0.25"), ("sft_pass_rate", "0.5"),
                                           ("improvement", "0.25")]


def test_merge_shows_merged_pairs_and_rates():
    """merge shows how many pairs it kept and two of its QC rates, not its long additive counts."""
    metrics = {"additive_pair_critic_accepted": 60.0, "merged": 60.0, "pair_acceptance": 1.0, "runaway_rate": 0.0}
    assert key_metrics("merge", metrics) == [("merged", "60"), ("pair_acceptance", "1"), ("runaway_rate", "0")]


def test_unknown_phase_shows_its_first_two_numbers():
    """A user's phase shows its first two numeric metrics, whatever their names."""
    assert key_metrics("mypkg:step", {"note": "x", "a": 1, "b": 2.5, "c": 3}) == [("a", "1"), ("b", "2.5")]


def test_known_kind_without_its_metrics_falls_back_to_numbers():
    """A built-in kind whose chosen metrics are all absent still shows something."""
    assert key_metrics("qc", {"other": 4}) == [("other", "4")]


def test_values_read_naturally():
    """Whole floats print as integers, others to 4 significant digits, None as missing."""
    assert [format_value(v) for v in (3, 14.0, 0.123456, None, True)] == ["3", "14", "0.1235", "missing", "1"]


def test_durations_scale_their_unit():
    """Seconds below a minute keep a decimal; longer spans show minutes or hours."""
    assert [format_duration(s) for s in (0.42, 12.34, 245, 7380, None)] == ["0.4s", "12.3s", "4m05s", "2h03m", "-"]


@given(st.text(max_size=400))
def test_clip_never_exceeds_the_line_limit(text):
    """Whatever the text, a clipped line is at most MAX_LINE characters and keeps short text whole."""
    out = clip(text)
    assert len(out) <= MAX_LINE and (out == text or len(text) > MAX_LINE)


def test_check_rows_split_metric_value_and_threshold():
    """`qc.x < 0.05` with value 0.1 and passed False becomes (False, 'qc.x', '0.1', '< 0.05')."""
    rows = check_rows([{"expr": "qc.x < 0.05", "value": 0.1, "passed": False},
                       {"expr": "qc.y >= 1", "value": None, "passed": False}])
    assert rows == [(False, "qc.x", "0.1", "< 0.05"), (False, "qc.y", "missing", ">= 1")]


def test_next_commands_are_the_exact_ones():
    """The gate, decide and resume commands of the run, with the gate's name filled in."""
    assert next_commands("r1", "pilot_qc") == [
        "runner gate r1",
        "runner decide r1 --gate pilot_qc --decision proceed|iterate|abort --reviewer WHO --reason '...'",
        "runner resume r1",
    ]
