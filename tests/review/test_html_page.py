"""The HTML review page: escaping of untrusted text, self-containment, and what it shows."""

from __future__ import annotations

import base64
import io
import shlex
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from runner.review.html_page import render_html, write_html
from runner.review.html_parts import decide_commands

HOSTILE = '<script>alert(1)</script> "onerror=alert(2) <img src=x onerror=alert(3)>'
SHA = "a" * 64


def _packet(**over: Any) -> dict[str, Any]:
    packet: dict[str, Any] = {
        "run_id": "r1", "gate": "pilot_qc", "iteration": 2, "packet_sha256": SHA,
        "checks": [{"expr": "qc.runaway_rate < 0.05", "value": 0.2, "passed": False},
                   {"expr": "qc.pair_acceptance >= 0.5", "value": 0.75, "passed": True}],
        "all_passed": False,
        "metrics": {"qc": {"1": {"runaway_rate": 0.3}, "2": {"runaway_rate": 0.2}},
                    "critic_pairs": {"2": {"scored": 40.0, "acceptance": 0.75}}},
        "params": {"response": {"temperature": 0.5, "max_new_tokens": 96}, "critic": {"t": 0.5}},
        "param_diff": [{"path": "response.temperature", "before": 0.7, "after": 0.5}],
        "samples": {"phase": "critic_pairs", "records": []},
        "review": None, "decisions": [], "may_set": ["response"],
    }
    packet.update(over)
    return packet


def _hostile_inputs() -> dict[str, Any]:
    """A packet, review data and decisions with hostile text wherever text can come from."""
    record = {"id": HOSTILE, "instruction": HOSTILE, "response": HOSTILE, "p_a": 0.9, "margin": 1.0}
    packet = _packet(
        metrics={"qc": {"2": {HOSTILE: 1.0}}},
        params={"response": {"style": HOSTILE}},
        param_diff=[{"path": "response.style", "before": "plain", "after": HOSTILE}],
        samples={"phase": "critic_pairs", "records": [record, {**record, "keep": False}]},
    )
    decisions = [{"gate": "pilot_qc", "iteration": 1, "decision": "iterate", "reviewer": HOSTILE,
                  "reason": HOSTILE, "set": {"response.style": HOSTILE}, "override_checks": False,
                  "at": "2026-01-01T00:00:00Z"}]
    review = {"samples": {"pair_critic": {"accept": [record], "reject": [record]}},
              "plots": [{"file": "a.png", "title": HOSTILE}]}
    return {"packet": packet, "decisions": decisions, "review": review}


class _Tags(HTMLParser):
    """Every start tag with its attributes, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def _png() -> bytes:
    fig = Figure(figsize=(1, 1))
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@pytest.fixture
def hostile_page() -> str:
    """The page of the hostile inputs, with one embedded image titled with hostile text."""
    given = _hostile_inputs()
    return render_html(given["packet"], [("a.png", HOSTILE, _png())], given["review"],
                       given["decisions"], Path("/tmp/state dir"))


@pytest.fixture
def fallback_page() -> str:
    """The hostile page without review data: samples come from the packet's records."""
    given = _hostile_inputs()
    return render_html(given["packet"], [], None, given["decisions"])


def test_hostile_text_never_appears_raw(hostile_page):
    """No `<script` or `"onerror=` from the data reaches the page unescaped."""
    assert "<script" not in hostile_page.lower() and '"onerror=' not in hostile_page


def test_hostile_text_appears_escaped(hostile_page):
    """The hostile text is shown, escaped, as text."""
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &quot;onerror=alert(2)" in hostile_page


def test_hostile_fallback_samples_are_escaped(fallback_page):
    """Samples taken from the packet's own records are escaped too."""
    assert "<script" not in fallback_page.lower() and "&lt;script&gt;" in fallback_page


def test_hostile_page_has_only_our_tags(hostile_page):
    """A parser finds no script, no event-handler attribute, and only our one image."""
    tags = _tags(hostile_page)
    assert not [t for t, _ in tags if t in ("script", "iframe", "object", "embed")]
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]
    assert len([t for t, _ in tags if t == "img"]) == 1


def test_images_are_embedded_as_data_uris(hostile_page):
    """Every image is a data: URI holding the PNG given."""
    [src] = [a["src"] for t, a in _tags(hostile_page) if t == "img"]
    assert src is not None and src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1]) == _png()


def test_nothing_is_fetched_from_elsewhere(hostile_page):
    """No tag refers to a URL (src/href only data: or a #fragment), and a CSP forbids fetching."""
    refs = [v for _, a in _tags(hostile_page) for k, v in a.items() if k in ("src", "href")]
    assert all(v is not None and v.startswith(("data:", "#")) for v in refs)
    csp = [a["content"] for t, a in _tags(hostile_page) if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp == ["default-src 'none'; img-src data:; style-src 'unsafe-inline'"]


def test_verdict_names_the_failing_check_before_the_checks_table():
    """The page opens with the verdict: the failing check and its value, before the table."""
    page = render_html(_packet(), [], None, [])
    verdict = page.index("1 of 2 checks FAIL")
    assert verdict < page.index("qc.runaway_rate &lt; 0.05") < page.index("<h2>Checks</h2>")


def test_critic_self_test_figures_shown_when_present():
    """A critic phase's probe_auc, probe_accuracy and label_bias appear in the verdict."""
    metrics = {"critic_pairs": {"2": {"scored": 40.0, "acceptance": 0.75, "probe_auc": 0.8125,
                                      "probe_accuracy": 0.7, "label_bias": -0.05}}}
    page = render_html(_packet(metrics=metrics), [], None, [])
    verdict = page[: page.index("<h2>Checks</h2>")]
    assert all(s in verdict for s in ("probe_auc", "0.8125", "probe_accuracy", "0.7", "-0.05"))


def test_critic_self_test_columns_absent_without_figures():
    """Without self-test metrics the critics table has no such columns, and says so."""
    page = render_html(_packet(), [], None, [])
    verdict = page[: page.index("<h2>Checks</h2>")]
    assert "<th>probe_auc</th>" not in verdict and "No self-test figures" in verdict


def test_changed_metric_is_marked():
    """A metric that changed since the previous iteration is highlighted."""
    page = render_html(_packet(), [], None, [])
    assert '<span class="changed">0.2</span>' in page


def test_decision_history_lists_decisions():
    """Each decision shows its gate, decision, reviewer and reason."""
    decisions = [{"gate": "pilot_qc", "iteration": 1, "decision": "iterate", "reviewer": "ann",
                  "reason": "too long", "set": {"response.max_new_tokens": 96},
                  "override_checks": False, "at": "t"}]
    page = render_html(_packet(), [], None, decisions)
    history = page[page.index("<h2>Decision history</h2>"):]
    assert all(s in history for s in ("iterate", "ann", "too long", "response.max_new_tokens=96"))


def test_commands_proceed_overrides_failing_checks():
    """With a failing check the proceed command carries --override-checks and the packet hash."""
    [(_, proceed), *_] = decide_commands(_packet(), None)
    words = shlex.split(proceed)
    assert words[:6] == ["runner", "decide", "r1", "--gate", "pilot_qc", "--decision"]
    assert "--override-checks" in words and words[words.index("--packet") + 1] == SHA


def test_commands_iterate_sets_an_allowed_parameter():
    """The ITERATE example sets a parameter under may_set, at its current value."""
    commands = dict(decide_commands(_packet(), Path("/s d")))
    iterate = shlex.split(next(c for label, c in commands.items() if label.startswith("iterate")))
    assert iterate[iterate.index("--set") + 1] == "response.temperature=0.5"
    assert iterate[iterate.index("--state-dir") + 1] == "/s d"


def test_commands_after_a_decision_only_resume():
    """Once this gate has a decision the page offers only `runner resume`."""
    decided = [{"gate": "pilot_qc", "iteration": 2, "decision": "proceed", "reviewer": "a"}]
    page = render_html(_packet(), [], None, decided)
    assert "runner resume r1" in page and "runner decide" not in page


def test_write_html_embeds_the_gate_folders_pngs(tmp_path):
    """write_html puts the folder's PNGs in the page in review.json's order, with its titles."""
    (tmp_path / "b.png").write_bytes(_png())
    (tmp_path / "a.png").write_bytes(_png())
    (tmp_path / "review.json").write_text('{"plots": [{"file": "b.png", "title": "Bee plot"}]}')
    page = write_html(tmp_path, _packet()).read_text(encoding="utf-8")
    alts = [a["alt"] for t, a in _tags(page) if t == "img"]
    assert alts == ["Bee plot", "a"]


def _structure(text: str) -> list[tuple[str, dict[str, str | None]]]:
    record = {"id": text, "instruction": text, "response": text, "p_a": 0.5, "margin": 0.0}
    decisions = [{"gate": "g", "iteration": 1, "decision": "iterate", "reviewer": text,
                  "reason": text, "set": {"x": text}, "override_checks": False, "at": "t"}]
    review = {"samples": {"pair_critic": {"accept": [record], "reject": [record]}}}
    page = render_html(_packet(params={"x": text}), [], review, decisions)
    return [(tag, attrs) for tag, attrs in _tags(page) if tag != "meta"]


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_page_structure_does_not_depend_on_record_text(text):
    """Whatever the text, the page has the same tags and attributes as for plain text."""
    assert _structure(text) == _structure("plain")
