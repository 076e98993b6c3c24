"""Unit tests of `runner.review.signing` and the key helpers of `runner.spec.reviewers`.

Test keys are generated here with `cryptography`; no key file is committed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from runner.errors import UsageError
from runner.machine import DecisionRecord
from runner.review.signing import load_signing_key, sign, signature_problem, signed_by, signed_message
from runner.spec.reviewers import ReviewerSpec, key_fingerprint, parse_public_key, public_key_line

# A known vector: the ed25519 key whose 32 private bytes are 0, 1, ..., 31, with the public
# line and fingerprint that OpenSSH's ssh-keygen (-y, -l) prints for it.
VECTOR_LINE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
VECTOR_FINGERPRINT = "SHA256:lbmsoA0yIEcEiVDRnMWuzm+nV+3ZEEpVIURqFoeSspg"
RUN = "run-1"


def _record(**kw) -> DecisionRecord:
    base = {"gate": "qc", "iteration": 2, "decision": "iterate", "reviewer": "alice",
            "reason": "too strict", "set": {"critic.threshold": 0.3}, "override_checks": False,
            "at": "2024-01-01T00:00:00Z", "packet_sha256": "ab" * 32}
    return DecisionRecord(**{**base, **kw})


def _write_key(path: Path, key) -> Path:
    path.write_bytes(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption()))
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def alice() -> Ed25519PrivateKey:
    """A fresh ed25519 test key."""
    return Ed25519PrivateKey.generate()


def _reviewer(name: str, key: Ed25519PrivateKey) -> ReviewerSpec:
    return ReviewerSpec(name=name, key=public_key_line(key.public_key()) + " comment@host")


def test_fingerprint_of_the_known_vector() -> None:
    """The fingerprint of the known key is what ssh-keygen -l printed for it."""
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    assert public_key_line(key.public_key()) == VECTOR_LINE
    assert key_fingerprint(VECTOR_LINE) == VECTOR_FINGERPRINT


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_fingerprint_equals_ssh_keygen(tmp_path: Path, alice: Ed25519PrivateKey) -> None:
    """For a fresh key, the fingerprint equals the one `ssh-keygen -lf` prints."""
    path = _write_key(tmp_path / "k", alice)
    out = subprocess.run(["ssh-keygen", "-lf", str(path)], capture_output=True, text=True, check=True).stdout
    assert out.split()[1] == key_fingerprint(public_key_line(alice.public_key()))


def test_reviewer_key_drops_the_comment(alice: Ed25519PrivateKey) -> None:
    """A reviewer's key is kept without its comment, so spellings of one key compare equal."""
    assert _reviewer("alice", alice).key == public_key_line(alice.public_key())


def test_parse_public_key_refuses_another_key_type() -> None:
    """An ECDSA key is refused with a message naming ed25519."""
    line = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()
    with pytest.raises(ValueError, match="ed25519"):
        parse_public_key(line)


def test_parse_public_key_refuses_garbage() -> None:
    """Text that is not a key line is refused, saying what to give."""
    with pytest.raises(ValueError, match=r"\.pub"):
        parse_public_key("ssh-ed25519 notbase64!")


def test_signed_decision_verifies(alice: Ed25519PrivateKey) -> None:
    """A decision signed by a listed reviewer under their name has no problem."""
    record = sign(_record(), RUN, alice)
    assert signature_problem(record, RUN, [_reviewer("alice", alice)]) is None
    assert signed_by(record) == key_fingerprint(public_key_line(alice.public_key()))


@pytest.mark.parametrize("field,value", [
    ("gate", "other"), ("iteration", 3), ("decision", "proceed"), ("reviewer", "bob"),
    ("reason", "changed"), ("set", {"critic.threshold": 0.9}), ("override_checks", True),
    ("packet_sha256", "cd" * 32),
])
def test_signature_covers_each_field(alice: Ed25519PrivateKey, field: str, value) -> None:
    """Changing any covered field after signing breaks the signature."""
    record = sign(_record(), RUN, alice).model_copy(update={field: value})
    assert "does not match" in (signature_problem(record, RUN, []) or "")


def test_signature_covers_the_run_id(alice: Ed25519PrivateKey) -> None:
    """A decision signed for one run does not verify for another."""
    record = sign(_record(), RUN, alice)
    assert "does not match" in (signature_problem(record, "run-2", []) or "")


def test_signature_does_not_cover_the_time(alice: Ed25519PrivateKey) -> None:
    """`at` is not covered (it is when the file was written, not what was decided)."""
    record = sign(_record(), RUN, alice).model_copy(update={"at": "2030-01-01T00:00:00Z"})
    assert signature_problem(record, RUN, []) is None


def test_signed_message_is_canonical_json() -> None:
    """The signed bytes are sorted, spaceless ASCII JSON under a fixed purpose."""
    msg = signed_message(RUN, _record(reason="ünïcode"))
    body = json.loads(msg)
    assert msg == json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert set(body) == {"purpose", "run_id", "gate", "iteration", "decision", "reviewer", "reason",
                         "set", "override_checks", "packet_sha256"}
    assert body["purpose"] == "runner gate decision v1" and body["reason"] == "ünïcode"


def test_unsigned_decision_is_a_problem_only_with_reviewers(alice: Ed25519PrivateKey) -> None:
    """Without a signature: a problem when reviewers are listed, none otherwise."""
    assert signature_problem(_record(), RUN, [_reviewer("alice", alice)]) == "not signed, but the spec lists reviewers"
    assert signature_problem(_record(), RUN, []) is None


def test_unlisted_key_is_a_problem(alice: Ed25519PrivateKey) -> None:
    """A valid signature by a key the reviewers do not list is a problem."""
    mallory = Ed25519PrivateKey.generate()
    record = sign(_record(), RUN, mallory)
    assert "do not list" in (signature_problem(record, RUN, [_reviewer("alice", alice)]) or "")


def test_wrong_name_is_a_problem(alice: Ed25519PrivateKey) -> None:
    """A listed key signing under another reviewer's name is a problem."""
    record = sign(_record(reviewer="bob"), RUN, alice)
    assert "alice's key" in (signature_problem(record, RUN, [_reviewer("alice", alice)]) or "")


def test_load_signing_key_reads_an_openssh_key(tmp_path: Path, alice: Ed25519PrivateKey) -> None:
    """An unencrypted OpenSSH ed25519 key file loads."""
    key = load_signing_key(_write_key(tmp_path / "k", alice))
    assert public_key_line(key.public_key()) == public_key_line(alice.public_key())


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_load_signing_key_refuses_an_encrypted_key(tmp_path: Path) -> None:
    """An encrypted key (made by ssh-keygen with a passphrase) is refused, saying how to make
    an unencrypted one."""
    path = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(path)], check=True)
    with pytest.raises(UsageError, match="encrypted"):
        load_signing_key(path)


def test_load_signing_key_refuses_a_public_key(tmp_path: Path, alice: Ed25519PrivateKey) -> None:
    """A .pub file given as the signing key is refused."""
    pub = tmp_path / "k.pub"
    pub.write_text(public_key_line(alice.public_key()) + "\n")
    with pytest.raises(UsageError, match="not an OpenSSH private key"):
        load_signing_key(pub)


def test_load_signing_key_refuses_a_missing_file(tmp_path: Path) -> None:
    """A missing key file is refused with its path."""
    with pytest.raises(UsageError, match="cannot read the signing key"):
        load_signing_key(tmp_path / "nope")
