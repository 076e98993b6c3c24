"""Signed decisions end to end: `reviewers:` in the spec, `decide --sign-with`, `signed_by` in
status, and `runner verify`. Test keys are generated here with `cryptography` (none committed)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from corehelpers import DATA, cli, copy_run, ok, status, tree_digest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from runner.spec.reviewers import key_fingerprint, public_key_line
from runner.store.journal import Journal, record_hash

RUN = "sg"


def _key(folder: Path, name: str) -> tuple[Path, str]:
    """A fresh unencrypted OpenSSH ed25519 key file NAME (and NAME.pub); returns the file and
    its public line."""
    key = Ed25519PrivateKey.generate()
    path = folder / name
    path.write_bytes(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption()))
    os.chmod(path, 0o600)
    line = public_key_line(key.public_key())
    (folder / f"{name}.pub").write_text(f"{line} {name}@test\n")
    return path, line


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Test keys: alice and agent are listed reviewers, mallory is not."""
    folder = tmp_path_factory.mktemp("keys")
    return {n: _key(folder, n) for n in ("alice", "agent", "mallory")}


def _signed_spec(folder: Path, keys: dict[str, tuple[Path, str]], names: tuple[str, ...] = ("alice", "agent")) -> Path:
    """review.yaml with `reviewers:` listing `names` (core_phases.py beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DATA / "core_phases.py", folder / "core_phases.py")
    block = "".join(f'  - name: {n}\n    key: "{keys[n][1]} {n}@test"\n' for n in names)
    text = (DATA / "review.yaml").read_text().replace("seed: 11\n", "seed: 11\nreviewers:\n" + block)
    path = folder / "signed.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def signed_at_gate(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, tuple[Path, str]]) -> Path:
    """Run `sg` of the signed spec, stopped at gate `review` (a check fails there)."""
    base = tmp_path_factory.mktemp("signed")
    state = base / "state"
    ok(cli(state, "run", str(_signed_spec(base / "spec", keys)), "--run-id", RUN), 3)
    return state


@pytest.fixture
def at_gate(signed_at_gate: Path, tmp_path: Path) -> Path:
    """This test's own copy of the signed run at its gate."""
    return copy_run(signed_at_gate, tmp_path / "state")


def _decide(state: Path, *extra: str, code: int = 0) -> str:
    proc = cli(state, "decide", RUN, "--gate", "review", "--reason", "pass rate too low", *extra)
    ok(proc, code)
    return proc.stderr


def _refused(state: Path, *extra: str) -> str:
    """`decide` with EXTRA: exit 2, one line, not one file of the state dir changed."""
    before = tree_digest(state)
    err = _decide(state, *extra, code=2)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert tree_digest(state) == before
    return err


def _journal(state: Path) -> Path:
    return state / RUN / "events.jsonl"


# -- refusals --------------------------------------------------------------------------------


def test_unsigned_decision_is_refused(at_gate: Path) -> None:
    """A spec with reviewers refuses an unsigned decision, nothing changed."""
    err = _refused(at_gate, "--decision", "abort", "--reviewer", "alice")
    assert "lists reviewers (alice, agent)" in err and "--sign-with" in err


def test_unlisted_key_is_refused(at_gate: Path, keys: dict) -> None:
    """A decision signed by a key the spec does not list is refused, nothing changed."""
    err = _refused(at_gate, "--decision", "abort", "--sign-with", str(keys["mallory"][0]))
    assert "is not one of the spec's reviewers" in err
    assert key_fingerprint(keys["mallory"][1]) in err and "reviewer is empty" not in err


def test_wrong_reviewer_name_is_refused(at_gate: Path, keys: dict) -> None:
    """`--reviewer` other than the signing key's name is refused, nothing changed."""
    err = _refused(at_gate, "--decision", "abort", "--reviewer", "agent", "--sign-with", str(keys["alice"][0]))
    assert "--reviewer 'agent' is not the signing key's name" in err and "'alice'" in err


def test_unreadable_key_file_is_refused(at_gate: Path, keys: dict) -> None:
    """A .pub given as the signing key is refused with what to give instead."""
    pub = keys["alice"][0].with_name("alice.pub")
    err = _refused(at_gate, "--decision", "abort", "--sign-with", str(pub))
    assert "not an OpenSSH private key" in err


# -- accepted, recorded, verified ------------------------------------------------------------


def test_signed_decision_is_recorded_with_signed_by(at_gate: Path, keys: dict) -> None:
    """A signed decision is accepted; status shows the key's fingerprint and the key's name."""
    _decide(at_gate, "--decision", "iterate", "--set", "scoring.threshold=0.0",
            "--sign-with", str(keys["alice"][0]))
    decision = status(at_gate, RUN)["decisions"][0]
    assert decision["reviewer"] == "alice"
    assert decision["signed_by"] == key_fingerprint(keys["alice"][1])
    assert decision["packet_sha256"] is not None  # a signature binds the reviewed packet


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_signed_by_is_what_ssh_keygen_prints(at_gate: Path, keys: dict) -> None:
    """`signed_by` equals the fingerprint `ssh-keygen -lf KEY.pub` prints."""
    _decide(at_gate, "--decision", "abort", "--sign-with", str(keys["agent"][0]))
    pub = keys["agent"][0].with_name("agent.pub")
    printed = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout
    assert status(at_gate, RUN)["decisions"][0]["signed_by"] == printed.split()[1]


def test_signed_cycle_verifies(at_gate: Path, keys: dict) -> None:
    """iterate (signed) -> resume -> proceed (signed) -> resume -> completed; verify exits 0."""
    _decide(at_gate, "--decision", "iterate", "--set", "scoring.threshold=0.0", "--sign-with", str(keys["alice"][0]))
    ok(cli(at_gate, "resume", RUN), 3)
    _decide(at_gate, "--decision", "proceed", "--reviewer", "agent", "--sign-with", str(keys["agent"][0]))
    ok(cli(at_gate, "resume", RUN), 0)
    out = ok(cli(at_gate, "verify", RUN)).stdout
    assert "hash chain intact; 2 journalled decision(s), each signature valid" in out


def test_decide_file_with_sign_with(at_gate: Path, keys: dict, tmp_path: Path) -> None:
    """A decision file with `sign_with` (relative to the file) and no reviewer is signed."""
    shutil.copyfile(keys["agent"][0], tmp_path / "agent_key")
    os.chmod(tmp_path / "agent_key", 0o600)
    path = tmp_path / "decision.yaml"
    path.write_text("gate: review\ndecision: abort\nreason: the critic is broken\nsign_with: agent_key\n")
    ok(cli(at_gate, "decide", RUN, "--file", str(path)))
    decision = status(at_gate, RUN)["decisions"][0]
    assert (decision["reviewer"], decision["signed_by"]) == ("agent", key_fingerprint(keys["agent"][1]))
    ok(cli(at_gate, "verify", RUN))


def test_unsigned_decision_has_signed_by_null(tmp_path: Path) -> None:
    """Without reviewers a decision may be unsigned: `signed_by` is null."""
    state = tmp_path / "state"
    ok(cli(state, "run", str(DATA / "review.yaml"), "--run-id", RUN), 3)
    ok(cli(state, "decide", RUN, "--gate", "review", "--decision", "abort", "--reviewer", "me", "--reason", "no"))
    assert status(state, RUN)["decisions"][0]["signed_by"] is None


# -- verify catches tampering ------------------------------------------------------------------


def _decided(state: Path, keys: dict) -> Path:
    """Sign an iterate by alice and journal it (resume to the gate of iteration 2)."""
    _decide(state, "--decision", "iterate", "--set", "scoring.threshold=0.0", "--sign-with", str(keys["alice"][0]))
    ok(cli(state, "resume", RUN), 3)
    return state


def test_edited_journal_line_fails_verify(at_gate: Path, keys: dict) -> None:
    """Changing the reason inside a journalled decision breaks the chain: verify exits 1 naming it."""
    journal = _journal(_decided(at_gate, keys))
    text = journal.read_text()
    assert "pass rate too low" in text
    journal.write_text(text.replace("pass rate too low", "pass rate is fine"))
    proc = cli(at_gate, "verify", RUN)
    assert proc.returncode == 1 and "hash chain breaks" in proc.stdout and "events.jsonl:" in proc.stdout


@pytest.mark.parametrize("forgery", ["unsigned", "changed after signing"])
def test_forged_decision_with_a_correct_chain_fails_verify(at_gate: Path, keys: dict, forgery: str) -> None:
    """A decision appended with a correct hash chain but no valid signature fails verify."""
    state = _decided(at_gate, keys)
    records = Journal(_journal(state)).read().records
    genuine = next(r["event"]["decision"] for r in records if r["event"]["kind"] == "decision_recorded")
    forged = {**genuine, "iteration": 2, "decision": "proceed", "set": {}, "override_checks": True}
    if forgery == "unsigned":
        forged["signature"] = None
    Journal(_journal(state)).append({"kind": "decision_recorded", "decision": forged})
    assert Journal(_journal(state)).read().repaired_tail is None  # the chain holds
    proc = cli(state, "verify", RUN)
    assert proc.returncode == 1, proc.stdout
    expected = "not signed" if forgery == "unsigned" else "does not match the decision"
    assert expected in proc.stdout and "gate 'review' (iteration 2)" in proc.stdout


def test_forged_decision_file_is_not_taken(at_gate: Path) -> None:
    """A decision file written past `decide` (unsigned) is neither shown nor journalled:
    `status` still awaits a decision, `resume` refuses it (exit 2), `verify` fails."""
    (at_gate / RUN / "decisions" / "review.i0001.json").write_text(json.dumps({
        "gate": "review", "iteration": 1, "decision": "proceed", "reviewer": "alice", "reason": "x",
        "set": {}, "override_checks": True, "at": "2024-01-01T00:00:00Z"}))
    assert status(at_gate, RUN)["status"] == "awaiting_decision"
    proc = cli(at_gate, "resume", RUN, "--wait", timeout=60)
    assert proc.returncode == 2 and "not signed" in proc.stderr
    assert not [r for r in Journal(_journal(at_gate)).read().records if r["event"]["kind"] == "decision_recorded"]
    assert cli(at_gate, "verify", RUN).returncode == 1


def test_verify_spec_checks_reviewers_against_a_trusted_copy(at_gate: Path, keys: dict, tmp_path: Path) -> None:
    """`verify --spec` exits 0 for a copy with the same reviewers, 1 for one with others."""
    state = _decided(at_gate, keys)
    same = _signed_spec(tmp_path / "same", keys)
    ok(cli(state, "verify", RUN, "--spec", str(same)))
    other = _signed_spec(tmp_path / "other", keys, names=("alice",))
    proc = cli(state, "verify", RUN, "--spec", str(other))
    assert proc.returncode == 1 and "reviewers differ" in proc.stdout and "agent" in proc.stdout


def test_rewritten_spec_and_journal_are_caught_only_by_verify_spec(at_gate: Path, keys: dict, tmp_path: Path) -> None:
    """Someone who adds their key to the frozen spec and re-chains the whole journal passes a
    plain verify; `verify --spec` against the trusted copy catches it (as the README says)."""
    state = _decided(at_gate, keys)
    trusted = _signed_spec(tmp_path / "trusted", keys)
    spec_json = state / RUN / "spec.json"
    frozen = json.loads(spec_json.read_text())
    frozen["spec"]["reviewers"].append({"name": "mallory", "key": keys["mallory"][1]})
    spec_json.write_text(json.dumps(frozen))
    lines, prev = [], "0" * 64
    for r in Journal(_journal(state)).read().records:
        event = r["event"]
        if event["kind"] == "run_started":
            event["frozen_sha256"] = hashlib.sha256(spec_json.read_bytes()).hexdigest()
        digest = record_hash(r["seq"], r["at"], event, prev)
        lines.append(json.dumps({"seq": r["seq"], "at": r["at"], "event": event, "prev": prev, "hash": digest}))
        prev = digest
    _journal(state).write_text("\n".join(lines) + "\n")
    (state / RUN / "state.json").unlink()
    ok(cli(state, "verify", RUN))
    proc = cli(state, "verify", RUN, "--spec", str(trusted))
    assert proc.returncode == 1 and "mallory" in proc.stdout
