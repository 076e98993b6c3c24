"""The packet opens with the phase's headline (e.g. the critics' figures in words)."""

from runner.machine import CheckOutcome, RunState
from runner.review.gates import build_packet, render_markdown


def _packet(headline: str | None) -> dict:
    state = RunState(run_id="r", name="n", status="awaiting_decision")
    checks = [CheckOutcome(expr="critic.probe_auc >= 0.75", value=None, passed=False)]
    return build_packet(state, "g", checks, None, None, [], "REVIEW BODY", headline_md=headline)


def test_headline_comes_before_the_checks():
    """The headline is rendered right after the verdict line, before the checks table."""
    text = render_markdown(_packet("## Critics\nnear chance: its acceptance rate tells nothing"))
    assert text.index("tells nothing") < text.index("## Checks") < text.index("REVIEW BODY")


def test_headline_is_in_the_json_packet():
    """packet.json carries it (and its sha covers it)."""
    assert _packet("H")["headline"] == "H" and _packet("H")["packet_sha256"] != _packet("I")["packet_sha256"]


def test_no_headline_no_section():
    """Without a headline the packet is as before."""
    assert "headline" not in _packet(None)


def test_missing_metric_check_shows_missing():
    """A check on a metric left out (a too-small probe set) fails as missing."""
    assert "| `critic.probe_auc >= 0.75` | missing | FAIL |" in render_markdown(_packet(None))
