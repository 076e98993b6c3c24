"""Signed gate decisions: what a signature covers, signing with a key file, checking one.

A reviewer signs with an unencrypted OpenSSH ed25519 private key (`ssh-keygen -t ed25519 -N ''`);
the spec's `reviewers:` lists who may decide, each by name and public key. The signature
covers exactly the run id, gate, iteration, decision, reviewer, reason, `set`,
`override_checks` and the packet's sha256, encoded as canonical JSON (sorted keys, no spaces,
ASCII) under a fixed `purpose`, so a signature made for one run, gate or iteration is worthless
for another, and a signature over anything else (an SSH login, another tool) never matches.
Keys and signatures come from `cryptography`; nothing here is hand-written cryptography.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from runner.errors import UsageError
from runner.machine import DecisionRecord, DecisionSignature
from runner.spec.reviewers import ReviewerSpec, key_fingerprint, parse_public_key, public_key_line

__all__ = ["PURPOSE", "load_signing_key", "sign", "signature_problem", "signed_by", "signed_message"]

PURPOSE = "runner gate decision v1"


def signed_message(run_id: str, record: DecisionRecord) -> bytes:
    """The bytes a decision's signature covers (canonical JSON; see the module docstring)."""
    body = {
        "purpose": PURPOSE, "run_id": run_id, "gate": record.gate, "iteration": record.iteration,
        "decision": record.decision, "reviewer": record.reviewer, "reason": record.reason,
        "set": record.set, "override_checks": record.override_checks,
        "packet_sha256": record.packet_sha256,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """The ed25519 private key in an OpenSSH key file; `UsageError` (exit 2) saying what to
    give when the file is missing, encrypted, or holds something else."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the signing key ({exc.strerror or exc})") from None
    try:
        key = load_ssh_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying "encrypted, and no password given"
        raise UsageError(f"{path}: the key is encrypted; sign with an unencrypted ed25519 key "
                         "(ssh-keygen -t ed25519 -N '' -f KEYFILE)") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UsageError(f"{path}: not an OpenSSH private key ({exc}); give the private key file "
                         "made by ssh-keygen -t ed25519, not its .pub") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path}: not an ed25519 key; make one with ssh-keygen -t ed25519 -N '' -f KEYFILE")
    return key


def sign(record: DecisionRecord, run_id: str, key: Ed25519PrivateKey) -> DecisionRecord:
    """`record` with the reviewer's signature over `signed_message`."""
    sig = key.sign(signed_message(run_id, record))
    signature = DecisionSignature(key=public_key_line(key.public_key()),
                                  sig=base64.b64encode(sig).decode("ascii"))
    return record.model_copy(update={"signature": signature})


def signed_by(record: DecisionRecord) -> str | None:
    """The fingerprint (`SHA256:...`, as `ssh-keygen -l` prints it) of the key that signed
    `record`, or None when it is unsigned. Says nothing about validity: see `signature_problem`."""
    if record.signature is None:
        return None
    try:
        return key_fingerprint(record.signature.key)
    except (ValueError, IndexError, binascii.Error):
        return None


def signature_problem(record: DecisionRecord, run_id: str, reviewers: list[ReviewerSpec]) -> str | None:
    """Why `record` is not a valid decision of a listed reviewer (None when it is).

    With `reviewers` listed, a decision must be signed by one of their keys under that key's
    name; without, a signature that is present must still be valid."""
    sig = record.signature
    if sig is None:
        if reviewers:
            return "not signed, but the spec lists reviewers"
        return None
    try:
        key = parse_public_key(sig.key)
        raw = base64.b64decode(sig.sig, validate=True)
    except (ValueError, binascii.Error) as exc:
        return f"its signature cannot be read ({exc})"
    try:
        key.verify(raw, signed_message(run_id, record))
    except InvalidSignature:
        return (f"the signature by {key_fingerprint(sig.key)} does not match the decision "
                "(it was changed after signing, or signed for another run, gate or iteration)")
    if not reviewers:
        return None
    names = {r.key: r.name for r in reviewers}
    line = public_key_line(key)
    if line not in names:
        return f"signed by {key_fingerprint(line)}, a key the spec's reviewers do not list"
    if names[line] != record.reviewer:
        return f"signed with {names[line]}'s key, but the reviewer says '{record.reviewer}'"
    return None
