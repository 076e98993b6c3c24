"""Hashing helpers for phase fingerprints (see `runner.engine.planning` for what goes in one).

A fingerprint hashes what determines a phase's output: its `uses` or resolved `run`, its
resolved `with` and `env`, the model it names, the fingerprints of its inputs, its seed, and a
hash of the source file of its function's module (so editing the phase's code re-runs it). An
ITERATE re-plans phases; one whose fingerprint equals an instance that succeeded earlier in the
run is `reused` instead of run again.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from runner.phases.registry import UsesError, resolve_uses, source_file_of
from runner.store.atomic import canonical_json

__all__ = ["canonical_json", "source_hash"]


@lru_cache(maxsize=256)
def _file_sha256(path: str, mtime_ns: int) -> str:
    # mtime is part of the key so an edited module is hashed again within one process.
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def source_hash(uses: str | None, spec_dir: Path) -> str | None:
    """sha256 of the module file defining the phase function (None for shell phases)."""
    if not uses:
        return None
    try:
        fn = resolve_uses(uses, spec_dir)
    except UsesError:
        return None
    path = source_file_of(fn)
    if path is None:
        return None
    return _file_sha256(path, Path(path).stat().st_mtime_ns)

