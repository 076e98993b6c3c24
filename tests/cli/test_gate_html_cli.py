"""`runner gate RUN_ID --html [FILE]` from the command line, and the page written at the gate."""

from __future__ import annotations

from pathlib import Path

from corehelpers import cli, decide, ok, tree_digest


def test_gate_writes_packet_html_beside_packet_md(review_at_gate: Path) -> None:
    """Reaching a gate writes packet.html next to packet.md, naming the failing check."""
    page = (review_at_gate / "rv" / "gates" / "review.i1" / "packet.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "score.pass_rate &gt;= 0.9" in page


def test_gate_html_to_file_prints_its_path(at_gate: Path, tmp_path: Path) -> None:
    """`--html FILE` writes the page there and prints that path, nothing else."""
    target = tmp_path / "review.html"
    out = ok(cli(at_gate, "gate", "rv", "--html", str(target))).stdout
    assert out.strip() == str(target.resolve()) and "1 of 2 checks FAIL" in target.read_text()


def test_gate_html_default_is_the_gate_folder(at_gate: Path) -> None:
    """`--html` without FILE (re)writes packet.html in the gate's folder and prints its path."""
    out = ok(cli(at_gate, "gate", "rv", "--html")).stdout.strip()
    assert Path(out) == (at_gate / "rv" / "gates" / "review.i1" / "packet.html").resolve()


def test_gate_html_shows_a_decision_recorded_since(at_gate: Path, tmp_path: Path) -> None:
    """After `decide`, the page lists the decision and offers only `runner resume`."""
    decide(at_gate, "rv", "review", "proceed", "--override-checks")
    page = tmp_path / "p.html"
    ok(cli(at_gate, "gate", "rv", "--html", str(page)))
    text = page.read_text()
    assert "test says proceed" in text and "runner resume rv" in text and "runner decide" not in text


def test_gate_html_into_missing_folder_is_refused(at_gate: Path, tmp_path: Path) -> None:
    """A FILE in a folder that does not exist: one line, exit 2, nothing written."""
    before = tree_digest(at_gate)
    proc = cli(at_gate, "gate", "rv", "--html", str(tmp_path / "no" / "p.html"))
    assert (proc.returncode, len(proc.stderr.strip().splitlines())) == (2, 1)
    assert "does not exist" in proc.stderr and tree_digest(at_gate) == before


def test_gate_html_with_json_is_refused(at_gate: Path) -> None:
    """--html and --json together: exit 2 with one line."""
    proc = cli(at_gate, "gate", "rv", "--html", "--json")
    assert proc.returncode == 2 and "either --json or --html" in proc.stderr
