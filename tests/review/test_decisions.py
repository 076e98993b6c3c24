"""Unit tests of `runner.review.decisions`: every refusal of the contract, and the record."""

from __future__ import annotations

from runner.machine import (
    CheckOutcome,
    DecisionRecorded,
    GateReached,
    GateStep,
    PhaseStarted,
    PhaseStep,
    PhaseSucceeded,
    Plan,
    Resumed,
    RunStarted,
    RunState,
    apply,
    param_paths,
)
from runner.review.decisions import DecisionRequest, bound_problem, refusals, set_refusals, to_record
from runner.spec import SetBounds

PARAMS = {"response": {"temperature": 0.4, "max_new_tokens": 128}, "count": 3}
PLAN = Plan((PhaseStep("make"), PhaseStep("qc"),
             GateStep("pilot", iterate_from="make", may_set=("response",), max_iterations=2,
                      checks=("qc.rate < 0.05", "qc.tokens < 40")),
             PhaseStep("train")))
T = "2024-01-01T00:00:00Z"


def at_gate(passed: bool = True, visits: int = 1) -> RunState:
    """A run awaiting a decision at gate 'pilot' after `visits` visits."""
    state = apply(None, RunStarted(run_id="r1", name="demo", params=PARAMS), PLAN)
    for i in range(1, visits + 1):
        if i > 1:
            record = to_record(request("iterate"), i - 1, T)
            state = apply(state, DecisionRecorded(decision=record), PLAN)
            state = apply(state, Resumed(at=T), PLAN)
        for name in ("make", "qc"):
            state = apply(state, PhaseStarted(name=name, at=T), PLAN)
            state = apply(state, PhaseSucceeded(name=name, at=T), PLAN)
        checks = [CheckOutcome(expr="qc.rate < 0.05", value=0.01, passed=True),
                  CheckOutcome(expr="qc.tokens < 40", value=None, passed=passed)]
        state = apply(state, GateReached(gate="pilot", checks=checks, packet_sha256="abc",
                                         at=T), PLAN)
    return state


def request(decision: str = "proceed", **kw) -> DecisionRequest:
    """A decision request on gate 'pilot' (fields overridable)."""
    fields = {"gate": "pilot", "reviewer": "ann", "reason": "looks fine"} | kw
    return DecisionRequest(decision=decision, **fields)


def refused(req: DecisionRequest, state: RunState | None = None) -> list[str]:
    """The refusals of `req` at the gate (or in `state`)."""
    state = state or at_gate()
    return refusals(state, PLAN, req, param_paths(state.params))


def test_accepts_a_valid_proceed():
    """A proceed on the pending gate with passing checks is accepted."""
    assert refused(request("proceed")) == []


def test_accepts_an_iterate_with_allowed_set():
    """An iterate setting a key below an allowed parent path is accepted."""
    assert refused(request("iterate", set={"response.temperature": 0.3})) == []


def test_accepts_an_abort():
    """An abort on the pending gate is accepted even while checks fail."""
    assert refused(request("abort"), at_gate(passed=False)) == []


def test_refuses_another_gate_naming_the_pending_one():
    """A decision on a gate that is not pending names the pending gate."""
    out = refused(request(gate="final"))
    assert len(out) == 1 and "the pending gate is 'pilot'" in out[0]


def test_refuses_when_no_gate_is_pending():
    """A decision while the run is running is refused."""
    state = apply(None, RunStarted(run_id="r1", name="demo", params=PARAMS), PLAN)
    out = refused(request(), state)
    assert len(out) == 1 and "no gate 'pilot' is pending (the run is running)" in out[0]


def test_refuses_a_second_decision():
    """A second decision on a visit that has one is refused and says to resume."""
    state = apply(at_gate(), DecisionRecorded(decision=to_record(request(), 1, T)), PLAN)
    out = refused(request("abort"), state)
    assert len(out) == 1 and "second decision" in out[0] and "runner resume r1" in out[0]


def test_refuses_set_with_proceed():
    """--set with proceed is refused."""
    out = refused(request("proceed", set={"response.temperature": 0.3}))
    assert out == ["--set goes with iterate only, not proceed: drop the --set options or "
                   "decide iterate"]


def test_refuses_set_with_abort():
    """--set with abort is refused."""
    assert "iterate only" in refused(request("abort", set={"count": 2}))[0]


def test_refuses_an_unknown_key_with_did_you_mean():
    """An unknown --set key is refused with a suggestion."""
    out = refused(request("iterate", set={"response.temprature": 0.3}))
    assert len(out) == 1 and "did you mean 'response.temperature'?" in out[0]


def test_refuses_a_key_may_set_does_not_allow():
    """A key outside the gate's may_set is refused, listing what is allowed."""
    out = refused(request("iterate", set={"count": 5}))
    assert len(out) == 1 and "does not allow changing 'count' (may_set: response)" in out[0]


def test_may_set_parent_allows_the_parent_itself():
    """A may_set entry allows the path itself, not only keys below it."""
    assert refused(request("iterate", set={"response": {"temperature": 0.1}})) == []


def test_refuses_a_mismatched_packet():
    """A --packet that is not the pending packet's sha256 is refused."""
    out = refused(request(packet_sha256="def"))
    assert len(out) == 1 and "does not match the pending packet" in out[0]


def test_accepts_the_matching_packet():
    """A --packet equal to the pending packet's sha256 is accepted."""
    assert refused(request(packet_sha256="abc")) == []


def test_refuses_proceed_while_a_check_fails():
    """Proceed with a failing check is refused, naming the check and its missing value."""
    out = refused(request("proceed"), at_gate(passed=False))
    assert len(out) == 1 and "qc.tokens < 40 (value missing)" in out[0]
    assert "qc.rate" not in out[0]


def test_accepts_proceed_with_override_checks():
    """Proceed with failing checks and override_checks is accepted."""
    assert refused(request("proceed", override_checks=True), at_gate(passed=False)) == []


def test_accepts_iterate_below_max_iterations():
    """Iterate on the first visit of a gate with max_iterations 2 is accepted."""
    assert refused(request("iterate"), at_gate(visits=1)) == []


def test_refuses_iterate_at_max_iterations():
    """Iterate on the gate's max_iterations-th visit is refused."""
    out = refused(request("iterate"), at_gate(visits=2))
    assert len(out) == 1 and "max_iterations (2)" in out[0]


def test_refuses_an_empty_reviewer():
    """A blank reviewer is refused."""
    assert refused(request(reviewer="  ")) == ["the reviewer is empty: say who decides with "
                                               "--reviewer"]


def test_refuses_an_empty_reason():
    """An empty reason is refused."""
    assert refused(request(reason="")) == ["the reason is empty: say why with --reason"]


def test_refuses_an_unknown_decision():
    """A decision other than proceed, iterate, abort is refused with a suggestion."""
    out = refused(request("proced"))
    assert len(out) == 1 and "did you mean 'proceed'?" in out[0]


def test_reports_every_refusal_at_once():
    """All refusals of one request are returned together."""
    out = refused(request("proceed", set={"nope": 1}, packet_sha256="x", reviewer="",
                          reason=""), at_gate(passed=False))
    assert len(out) == 6


def test_to_record_copies_the_request():
    """to_record builds the DecisionRecord for the visit's iteration."""
    record = to_record(request("iterate", set={"count": 2}, override_checks=True,
                               packet_sha256="abc"), 3, T)
    assert (record.gate, record.iteration, record.decision, record.set, record.override_checks,
            record.at, record.packet_sha256) == ("pilot", 3, "iterate", {"count": 2}, True, T,
                                                 "abc")


# -- typed, bounded values of `set` ------------------------------------------------------------

BOUNDS = {"response.temperature": SetBounds(min=0.1, max=1.0), "response": SetBounds()}


def test_set_keeps_the_parameter_type() -> None:
    """Text for a number is refused; a whole number for a number is not."""
    assert "got text '0.5'" in set_refusals(PARAMS, {"response.temperature": "0.5"}, BOUNDS, None)[0]
    assert set_refusals(PARAMS, {"response.temperature": 1}, BOUNDS, None) == []


def test_bounds_reach_through_a_mapping_set_on_the_group() -> None:
    """`response={temperature: 5}` under an unbounded `response` still meets temperature's max."""
    [why] = set_refusals(PARAMS, {"response": {"temperature": 5.0}}, BOUNDS, None)
    assert "above the gate's max 1" in why


def test_choices_compare_kinds() -> None:
    """true is not the choice 1, and '1' is not 1."""
    bounds = SetBounds(choices=[1, "a"])
    assert bound_problem("x", True, bounds) and bound_problem("x", "1", bounds)
    assert bound_problem("x", 1, bounds) is None and bound_problem("x", "a", bounds) is None


def test_declared_types_override_the_parameter_type() -> None:
    """param_types {count: [integer, string]} lets text through."""
    assert set_refusals(PARAMS, {"count": "auto"}, {}, {"count": ["integer", "string"]}) == []
    assert set_refusals(PARAMS, {"count": [1]}, {}, {"count": ["integer", "string"]})
