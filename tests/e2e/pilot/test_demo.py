"""`runner run specs/demo.yaml`, unchanged, reaches its QC gate with everything a reviewer needs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pilotlib import DEMO, EXIT_GATE, GATE_METRICS, gate, instance, log_lines, ok, runner, status

from runner.store.batches import derive_seed

pytestmark = pytest.mark.slow

RUN_ID = "demo"
LLM_PHASES = ("generate_instructions", "critic_instructions", "generate_responses", "critic_pairs")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Demo:
    state_dir: Path
    rc: int
    stderr: str
    status: dict[str, Any]
    gate: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return self.state_dir / RUN_ID


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The real demo spec, run once to its gate."""
    state = tmp_path_factory.mktemp("demo") / "state"
    proc = runner(state, "run", str(DEMO), "--run-id", RUN_ID)
    ok(proc, EXIT_GATE)
    return Demo(state, proc.returncode, proc.stderr, status(state, RUN_ID), gate(state, RUN_ID))


def _packet_md(demo: Demo) -> Path:
    reached = [line for line in log_lines(demo.state_dir, RUN_ID) if line["event"] == "gate_reached"]
    return Path(reached[-1]["packet"])


def _sections(markdown: str) -> dict[str, list[str]]:
    """`## ` heading -> its lines, ignoring headings inside code fences."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    fence: str | None = None
    for line in markdown.splitlines():
        if fence is None and (m := re.match(r"^(`{3,})", line)):
            fence = m.group(1)
        elif fence is not None and line.strip() == fence:
            fence = None
        elif fence is None and line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
            continue
        current.append(line if fence is None or line.startswith(fence) else "")
    return sections


def test_demo_stops_at_the_qc_gate(demo):
    """The demo exits 3 and its status awaits a decision on pilot_qc in iteration 1."""
    assert (demo.rc, demo.status["status"], demo.status["pending_gate"], demo.status["iteration"]) \
        == (EXIT_GATE, "awaiting_decision", "pilot_qc", 1)


def test_status_shows_the_five_qc_metrics(demo):
    """`status --json` gives the qc phase a number for each of the five gate metrics."""
    metrics = instance(demo.status, "qc", 1)["metrics"]
    missing = [m for m in GATE_METRICS if not isinstance(metrics.get(m), (int, float))]
    assert missing == [], metrics


def test_gate_checks_have_the_qc_values(demo):
    """`gate --json` lists the five QC checks, each with the qc metric's value (not null)."""
    metrics = instance(demo.status, "qc", 1)["metrics"]
    checks = {c["expr"].split()[0]: c["value"] for c in demo.gate["checks"]}
    assert {k: v for k, v in checks.items() if k.startswith("qc.")} == {
        f"qc.{m}": metrics[m] for m in GATE_METRICS}


def test_gate_checks_each_critics_probe_auc(demo):
    """Both critics' probe_auc is checked, with the critic phase's value."""
    checks = {c["expr"].split()[0]: c["value"] for c in demo.gate["checks"]}
    want = {f"{p}.probe_auc": instance(demo.status, p, 1)["metrics"]["probe_auc"]
            for p in ("critic_instructions", "critic_pairs")}
    assert {k: checks.get(k) for k in want} == want


def test_demo_critics_pass_their_self_test(demo):
    """On the tiny model (trained on both label orders) each critic's probe_auc is >= 0.75."""
    passed = {c["expr"]: c["passed"] for c in demo.gate["checks"] if "probe_auc" in c["expr"]}
    assert passed and all(passed.values()), demo.gate["checks"]


def test_packet_opens_with_the_critics_figures(demo):
    """The packet's first section after the verdict is the critics' figures."""
    text = _packet_md(demo).read_text(encoding="utf-8")
    assert text.index("## Critics: can their verdicts be trusted?") < text.index("## Checks")


def test_packet_links_the_histograms_beside_it(demo):
    """The packet Markdown links three PNG histograms (response and instruction lengths,
    critic p(A)), which exist in its folder."""
    md = _packet_md(demo)
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", md.read_text(encoding="utf-8"))
    assert len(set(links)) == 3, links
    assert all((md.parent / link).read_bytes().startswith(PNG_MAGIC) for link in links)


def test_gate_out_copies_packet_and_histograms(demo, tmp_path):
    """`runner gate --out DIR` writes the packet with the images it links."""
    ok(runner(demo.state_dir, "gate", RUN_ID, "--out", str(tmp_path / "out")))
    md = (tmp_path / "out" / "packet.md").read_text(encoding="utf-8")
    links = set(re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", md))
    assert len(links) == 3 and all((tmp_path / "out" / link).is_file() for link in links)


def test_packet_shows_five_accepted_samples_per_critic(demo):
    """Each critic's accepted-samples section of the packet holds 5 samples."""
    sections = _sections(_packet_md(demo).read_text(encoding="utf-8"))
    accepted = {t: lines for t, lines in sections.items() if re.search(r"\baccepted samples$", t)}
    counts = {t: sum(1 for line in lines if line.startswith("- `")) for t, lines in accepted.items()}
    assert counts == {"instruction_critic: 5 accepted samples": 5,
                      "pair_critic: 5 accepted samples": 5}


def test_every_record_carries_provenance(demo):
    """Each record of each phase names run, iteration, phase, spec, commit, model and batch seed."""
    manifest = json.loads((demo.run_dir / "manifest.json").read_text())
    seed = yaml.safe_load(DEMO.read_text(encoding="utf-8"))["seed"]
    wrong: list[str] = []
    for name in LLM_PHASES:
        phase_dir = demo.run_dir / "phases" / f"{name}.i1"
        model_hash = json.loads((phase_dir / "model.json").read_text())["model_hash"]
        batches = sorted((phase_dir / "batches").glob("*.jsonl"))
        assert batches, name
        for batch in batches:
            for line in batch.read_text(encoding="utf-8").splitlines():
                prov = json.loads(line)["provenance"]
                expected = {
                    "run_id": RUN_ID, "iteration": 1, "phase": name,
                    "spec_sha256": manifest["spec_sha256"], "git_commit": manifest["git"]["commit"],
                    "model_hash": model_hash, "batch_seed": derive_seed(seed, name, int(batch.stem)),
                }
                got = {k: prov.get(k) for k in expected}
                if got != expected or not isinstance(prov.get("params"), dict):
                    wrong.append(f"{name}/{batch.name}: {got} != {expected}")
    assert wrong == [], wrong[:3]


def _sampling(demo: Demo, phase: str, group: str) -> tuple[set[tuple], tuple]:
    keys = ("temperature", "top_p", "repetition_penalty", "max_new_tokens")
    lines = (demo.run_dir / "phases" / f"{phase}.i1" / "records.jsonl").read_text().splitlines()
    got = {tuple(json.loads(line)["provenance"]["params"][k] for k in keys) for line in lines}
    return got, tuple(demo.status["params"][group][k] for k in keys)


def test_instruction_records_carry_their_sampling_params(demo):
    """generate_instructions' records carry the instruction.* sampling parameters."""
    got, want = _sampling(demo, "generate_instructions", "instruction")
    assert got == {want}


def test_response_records_carry_their_sampling_params(demo):
    """generate_responses' records carry the response.* sampling parameters."""
    got, want = _sampling(demo, "generate_responses", "response")
    assert got == {want}
