"""`reviewers:` in a spec: who may decide at the run's gates, each by an OpenSSH ed25519 key.

Keys are parsed by `cryptography` (its OpenSSH loaders); nothing here is hand-written
cryptography. A key is kept in its canonical form `ssh-ed25519 AAAA...` (the comment, which
is not part of the key, is dropped), so two spellings of one key compare equal.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_ssh_public_key
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ReviewerSpec", "key_fingerprint", "parse_public_key", "public_key_line"]


def public_key_line(key: Ed25519PublicKey) -> str:
    """The key as an OpenSSH public-key line without comment: `ssh-ed25519 AAAA...`."""
    return key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An ed25519 key from an OpenSSH public-key line (`ssh-ed25519 AAAA... [comment]`);
    ValueError saying what to give otherwise."""
    parts = text.strip().split() if isinstance(text, str) else []
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key; give the line of a .pub file, "
                         "'ssh-ed25519 AAAA... [comment]' (make one: ssh-keygen -t ed25519)")
    try:
        key = load_ssh_public_key(f"{parts[0]} {parts[1]}".encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        raise ValueError(f"not a readable OpenSSH public key ({exc}); give the line of a .pub file") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"a {parts[0]} key; reviewers sign with ed25519 keys (ssh-keygen -t ed25519)")
    return key


def key_fingerprint(line: str) -> str:
    """The fingerprint `ssh-keygen -l` prints for a key: `SHA256:` + unpadded base64 of the
    sha256 of the key's wire blob (the base64 field of its public-key line)."""
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


class ReviewerSpec(BaseModel):
    """One reviewer: a name (what `--reviewer` must say) and an ed25519 public key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    key: str

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if value != value.strip() or not value:
            raise ValueError("a reviewer's name must not start or end with spaces")
        return value

    @field_validator("key")
    @classmethod
    def _ed25519_key(cls, value: str) -> str:
        return public_key_line(parse_public_key(value))

    @property
    def fingerprint(self) -> str:
        """The key's `SHA256:...` fingerprint."""
        return key_fingerprint(self.key)
