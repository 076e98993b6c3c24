"""specs/stage1_pilot.yaml on the real model, unchanged but for the model path.

On SmolLM2-135M the critics are label-biased and cannot tell good from bad; the pilot used to
stop with "all checks pass" anyway. Now its gate must fail the critics' probe checks, and the
packet must say in words that their acceptance rates tell nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reallib import EXIT_GATE, checks, cli, packet

pytestmark = [pytest.mark.real, pytest.mark.slow]
PROBE_CHECKS = ("critic_instructions.probe_auc >= 0.75", "critic_pairs.probe_auc >= 0.75")


@pytest.fixture(scope="module")
def pilot(real_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The pilot run to its gate: (state dir, exit code)."""
    state = tmp_path_factory.mktemp("real-pilot") / "state"
    done = cli(state, "run", "specs/stage1_pilot.yaml", "--run-id", "real",
               "--set", f"model_path={real_model}")
    return state, done.returncode


def test_pilot_stops_at_its_gate(pilot):
    """The run reaches the pilot gate (exit 3)."""
    assert pilot[1] == EXIT_GATE


def test_gate_fails_the_critic_probe_checks(pilot):
    """Both critics' probe_auc checks fail: the critics cannot tell planted good from bad."""
    got = checks(packet(pilot[0], "real"))
    assert [got[c][1] for c in PROBE_CHECKS] == [False, False], got


def test_packet_does_not_say_all_checks_pass(pilot):
    """The verdict line is 'some checks FAIL'."""
    assert packet(pilot[0], "real")["all_passed"] is False


def test_packet_opens_with_the_critics_in_words(pilot):
    """The packet's headline names each failing critic as near chance or weak."""
    headline = packet(pilot[0], "real").get("headline", "")
    assert headline.count("near chance") + headline.count("only **weakly**") >= 2, headline


def test_critic_records_carry_both_label_orders(pilot):
    """The pair critic's records hold p_a, p_a_swapped and the debiased p_yes."""
    import json

    recs = (pilot[0] / "real" / "phases" / "critic_pairs.i1" / "records.jsonl").read_text().splitlines()
    first = json.loads(recs[0])
    assert {"p_a", "p_a_swapped", "p_yes"} <= set(first)
