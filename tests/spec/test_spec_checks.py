"""Gate checks: parsing `PHASE.METRIC OP NUMBER` and evaluating them against metrics."""

from __future__ import annotations

import pytest

from runner.spec import Check, parse_check


def test_parse_fields() -> None:
    """A check parses into phase, metric, op, value and the expression."""
    assert parse_check(" qc.runaway_rate <= 5e-2 ") == Check("qc", "runaway_rate", "<=", 0.05, "qc.runaway_rate <= 5e-2")


def test_parse_signed_number() -> None:
    """Numbers may carry a sign and an exponent."""
    assert parse_check("my-phase.loss>-1.5E+3").value == -1500.0


def test_parse_refuses_unknown_operator() -> None:
    """A check with `=<` raises ValueError naming the expected form."""
    with pytest.raises(ValueError, match=r"PHASE\.METRIC OP NUMBER"):
        parse_check("qc.rate =< 1")


def test_parse_refuses_dotted_metric() -> None:
    """METRIC is one identifier: `qc.a.b` does not parse."""
    with pytest.raises(ValueError, match=r"PHASE\.METRIC OP NUMBER"):
        parse_check("qc.a.b < 1")


def test_evaluate_nested_metrics() -> None:
    """evaluate reads metrics[phase][metric]."""
    assert parse_check("qc.rate < 0.05").evaluate({"qc": {"rate": 0.01}}) is True


def test_evaluate_flat_metrics() -> None:
    """evaluate also reads a flat 'phase.metric' key."""
    assert parse_check("qc.rate != 1").evaluate({"qc.rate": 1}) is False


def test_evaluate_missing_is_none() -> None:
    """A missing (or non-numeric) metric evaluates to None."""
    assert parse_check("qc.rate < 1").evaluate({"qc": {"other": 1, "rate": "n/a"}}) is None
