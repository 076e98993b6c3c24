"""`reviewers:` in a spec: each an ed25519 OpenSSH public key with a name, checked and located."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from runner.errors import SpecProblem
from runner.spec import load_spec
from runner.spec.reviewers import public_key_line

One = Callable[..., SpecProblem]


def _line() -> str:
    return public_key_line(Ed25519PrivateKey.generate().public_key())


def _with_reviewers(valid: str, block: str) -> str:
    return valid.replace("name: pilot\n", "name: pilot\nreviewers:\n" + block)


def test_reviewers_load_with_keys_without_comment(write: Callable[..., Path], valid: str) -> None:
    """Listed reviewers load; each key is kept as `ssh-ed25519 AAAA...` without its comment."""
    key = _line()
    spec = load_spec(write(_with_reviewers(valid, f'  - name: alice\n    key: "{key} alice@laptop"\n')))
    assert [(r.name, r.key) for r in spec.spec.reviewers] == [("alice", key)]


def test_reviewer_key_that_is_not_a_key_is_located(one: One, valid: str) -> None:
    """A key that is not an OpenSSH public key is located at the key."""
    p = one(_with_reviewers(valid, "  - name: alice\n    key: hello\n"))
    assert (p.line, p.path) == (5, "reviewers[0].key") and ".pub" in p.message


def test_reviewer_key_of_another_type_is_refused(one: One, valid: str) -> None:
    """An ECDSA key is refused: reviewers sign with ed25519."""
    ecdsa = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()
    p = one(_with_reviewers(valid, f'  - name: alice\n    key: "{ecdsa}"\n'))
    assert p.path == "reviewers[0].key" and "ed25519" in p.message


def test_reviewer_listed_twice_is_refused(one: One, valid: str) -> None:
    """Two entries with one name are refused."""
    block = f'  - name: alice\n    key: "{_line()}"\n  - name: alice\n    key: "{_line()}"\n'
    p = one(_with_reviewers(valid, block))
    assert p.path == "reviewers" and "listed twice" in p.message


def test_reviewer_unknown_key_did_you_mean(one: One, valid: str) -> None:
    """A misspelt key in a reviewer entry gets a did-you-mean."""
    p = one(_with_reviewers(valid, f'  - name: alice\n    kee: "{_line()}"\n    key: "{_line()}"\n'))
    assert p.path == "reviewers[0].kee" and "did you mean 'key'?" in p.message
