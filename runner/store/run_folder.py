"""The run folder `STATE_DIR/RUN_ID/`: its paths, creation, snapshot and decision files.

This module is the one place that knows the layout of docs/ARCHITECTURE.md, so no other module
builds a path inside a run folder by hand. It knows nothing of the state machine's rules: a
decision is an opaque dict here, stored in a file that only one writer can create.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import Refused, UsageError
from .atomic import create_exclusive, dumps_json, fsync_dir, makedirs_durable, write_atomic, write_json_atomic
from .batches import BatchStore
from .journal import Journal
from .lock import RunLock

__all__ = ["RUN_ID_RE", "RunFolder", "check_name", "check_run_id", "list_runs", "new_run_id"]

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Phase and gate names become parts of file names: same alphabet, so no '/', no '..'.
_NAME_RE = RUN_ID_RE
_DECISION_RE = re.compile(r"^(?P<gate>.+)\.i(?P<iteration>\d{4,})\.json$")
_SUBDIRS = ("decisions", "gates", "phases", "cache")
_FROZEN_ID_RE = re.compile(r"^[0-9a-f]{64}$")


def check_run_id(run_id: str) -> str:
    """Return `run_id` if valid, else raise `UsageError` saying what a run id may be."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise UsageError(
            f"invalid run id {run_id!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return run_id


def check_name(kind: str, name: str) -> str:
    """Validate a phase or gate name used in a file name (`kind` is for the message)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise UsageError(
            f"invalid {kind} name {name!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def _check_iteration(iteration: int) -> int:
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 1:
        raise UsageError(f"invalid iteration {iteration!r}: must be an integer >= 1")
    return iteration


def new_run_id(name: str) -> str:
    """A fresh run id: `<name>-<UTC yyyymmdd-HHMMSS>-<4 random hex>`."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return check_run_id(f"{name}-{stamp}-{secrets.token_hex(2)}")


def list_runs(state_dir: str | os.PathLike[str]) -> list[str]:
    """The ids of the run folders in `state_dir`, sorted; [] if it does not exist."""
    try:
        entries = list(os.scandir(state_dir))
    except FileNotFoundError:
        return []
    return sorted(e.name for e in entries if e.is_dir() and RUN_ID_RE.match(e.name))


class RunFolder:
    """Paths and small files of one run folder; see docs/ARCHITECTURE.md for the layout."""

    def __init__(self, state_dir: str | os.PathLike[str], run_id: str) -> None:
        self.state_dir = Path(state_dir)
        self.run_id = check_run_id(run_id)
        self.root = self.state_dir / run_id
        self.events = self.root / "events.jsonl"
        self.snapshot = self.root / "state.json"
        self.lock = self.root / "lock"
        self.log = self.root / "log.jsonl"
        self.manifest = self.root / "manifest.json"
        self.spec_json = self.root / "spec.json"
        self.spec_yaml = self.root / "spec.yaml"
        self.decisions_dir = self.root / "decisions"
        self.gates_dir = self.root / "gates"
        self.phases_dir = self.root / "phases"
        self.cache_dir = self.root / "cache"
        self.specs_dir = self.root / "specs"

    list_runs = staticmethod(list_runs)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.state_dir)!r}, {self.run_id!r})"

    # -- paths -------------------------------------------------------------------------

    def gate_dir(self, gate: str, iteration: int) -> Path:
        """`gates/<gate>.i<N>/` (not created)."""
        return self.gates_dir / f"{check_name('gate', gate)}.i{_check_iteration(iteration)}"

    def phase_dir(self, name: str, iteration: int) -> Path:
        """`phases/<name>.i<N>/`, the phase instance's output_dir (not created)."""
        return self.phases_dir / f"{check_name('phase', name)}.i{_check_iteration(iteration)}"

    def decision_path(self, gate: str, iteration: int) -> Path:
        # Zero-padded so that name order is iteration order for every gate.
        gate, iteration = check_name("gate", gate), _check_iteration(iteration)
        return self.decisions_dir / f"{gate}.i{iteration:04d}.json"

    def frozen_spec_path(self, frozen: str | None) -> Path:
        """The frozen spec in force: `spec.json` (None: the one of `run`), or an amended one,
        `specs/<frozen>.json`, named by the sha256 of its bytes."""
        if frozen is None:
            return self.spec_json
        if not _FROZEN_ID_RE.match(frozen):
            raise UsageError(f"invalid frozen spec id {frozen!r}: must be 64 lowercase hex digits")
        return self.specs_dir / f"{frozen}.json"

    # -- the folder ----------------------------------------------------------------------

    def exists(self) -> bool:
        return self.root.is_dir()

    def create(self) -> None:
        """Create the run folder and its subfolders; `Refused` if the run id is taken."""
        makedirs_durable(self.state_dir)
        try:
            self.root.mkdir()  # atomic: of two runs given one id, exactly one gets it
        except FileExistsError:
            raise Refused(
                f"run '{self.run_id}' already exists in {self.state_dir}; "
                "choose another --run-id or resume it"
            ) from None
        for sub in _SUBDIRS:
            (self.root / sub).mkdir()
        fsync_dir(self.root)
        fsync_dir(self.state_dir)

    def create_with_files(self, files: dict[str, bytes]) -> None:
        """Create the run folder holding `files` (name -> bytes) in one atomic step.

        The folder is made under `STATE_DIR/.starting/` and renamed into place, so a `run`
        killed at any instant leaves either no run folder (run it again) or one whose frozen
        spec is there (`resume` continues it); never a folder neither command accepts.
        """
        if self.exists():
            self.create()  # raises the `Refused` of an existing run id
        staging = RunFolder(self.state_dir / ".starting" / secrets.token_hex(8), self.run_id)
        staging.create()
        for name, data in files.items():
            write_atomic(staging.root / name, data)
        try:
            os.rename(staging.root, self.root)  # fails if the folder appeared (not empty) meanwhile
        except OSError:
            shutil.rmtree(staging.state_dir, ignore_errors=True)
            if self.exists():
                self.create()  # raises the `Refused` of an existing run id
            raise
        fsync_dir(self.state_dir)
        try:
            staging.state_dir.rmdir()
        except OSError:
            pass

    def require(self) -> RunFolder:
        """Return self if the run exists, else raise `UsageError` (a missing run: exit 2)."""
        if not self.exists():
            raise UsageError(f"no run '{self.run_id}' in {self.state_dir}")
        return self

    def journal(self) -> Journal:
        return Journal(self.events)

    def run_lock(self) -> RunLock:
        return RunLock(self.root, self.run_id)

    def batch_store(self, phase: str, iteration: int) -> BatchStore:
        return BatchStore(self.phase_dir(phase, iteration))

    # -- snapshot --------------------------------------------------------------------------

    def write_snapshot(self, state: dict[str, Any], *, durable: bool = True) -> None:
        """Replace `state.json` atomically (and durably, unless `durable=False`: the snapshot
        is a cache of the journal, so a caller that detects a lagging snapshot, e.g. by a seq
        stored in it, may skip the fsyncs; see `write_atomic`)."""
        write_json_atomic(self.snapshot, state, durable=durable)

    def read_snapshot(self) -> dict[str, Any] | None:
        """The snapshot, or None if there is none or it cannot be parsed.

        The snapshot is only a cache of the journal; the caller rebuilds it when it is None.
        """
        try:
            obj = json.loads(self.snapshot.read_bytes())
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return None
        return obj if isinstance(obj, dict) else None

    # -- amended specs ---------------------------------------------------------------------

    def write_frozen_spec(self, data: bytes) -> str:
        """Store a frozen spec under its content hash (atomically, durably); return the hash.

        Nothing is in force by being written here: a journalled `spec_amended` event naming
        the hash puts it in force, so a crash before that event leaves an unused file only.
        """
        frozen = hashlib.sha256(data).hexdigest()
        makedirs_durable(self.specs_dir)
        write_atomic(self.frozen_spec_path(frozen), data)
        return frozen

    def read_frozen_spec(self, frozen: str | None) -> bytes:
        """The bytes of a frozen spec (`frozen_spec_path`); `UsageError` when it is missing or,
        for an amended one, its bytes no longer have the hash it is named by."""
        path = self.frozen_spec_path(frozen)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read the run's frozen spec ({exc.strerror or exc})") from None
        if frozen is not None and hashlib.sha256(data).hexdigest() != frozen:
            raise UsageError(f"{path}: the frozen spec was changed after it was written (its sha256 "
                             "differs from its name); restore it or start a new run")
        return data

    # -- decisions -------------------------------------------------------------------------

    def record_decision(self, gate: str, iteration: int, decision: dict[str, Any]) -> bool:
        """Store `decision` as `decisions/<gate>.i<NNNN>.json` if none exists (exclusive
        creation: of two concurrent callers exactly one gets True)."""
        for key, expected in (("gate", gate), ("iteration", iteration)):
            if key in decision and decision[key] != expected:
                raise ValueError(f"decision {key} {decision[key]!r} != {expected!r}")
        makedirs_durable(self.decisions_dir)
        return create_exclusive(self.decision_path(gate, iteration), dumps_json(decision))

    def decision_for(self, gate: str, iteration: int) -> dict[str, Any] | None:
        """The decision recorded for that gate and iteration, or None."""
        path = self.decision_path(gate, iteration)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return self._with_key(json.loads(data), gate, iteration)

    def read_decisions(self) -> list[dict[str, Any]]:
        """All recorded decisions in recording order: by iteration, then by the decision's
        `at` (if it has one), then by file name. Each carries `gate` and `iteration`."""
        try:
            names = os.listdir(self.decisions_dir)
        except FileNotFoundError:
            return []
        found: list[tuple[int, str, str, dict[str, Any]]] = []
        for name in names:
            m = _DECISION_RE.match(name)
            if not m:  # temporary files of a decide in progress, strays
                continue
            iteration = int(m.group("iteration"))
            decision = self._with_key(
                json.loads((self.decisions_dir / name).read_bytes()), m.group("gate"), iteration
            )
            at = decision.get("at")
            found.append((iteration, at if isinstance(at, str) else "", name, decision))
        found.sort(key=lambda t: t[:3])
        return [t[3] for t in found]

    @staticmethod
    def _with_key(decision: dict[str, Any], gate: str, iteration: int) -> dict[str, Any]:
        decision.setdefault("gate", gate)
        decision.setdefault("iteration", iteration)
        return decision
