"""`runner verify RUN_ID [--spec FILE]`: is the run's record intact and every decision signed?

Checks, reporting every failure (exit 1) or none (exit 0): the journal's hash chain, line by
line; each frozen spec against the hash the journal holds for it (`spec.json` in `run_started`,
an amended one by its name); every decision, journalled or only recorded, against the
`reviewers:` of the spec in force when it was made; with `--spec`, that the reviewers of every
spec the run was under equal those of FILE, a trusted copy (the one in git, say). Someone who
can rewrite both a run's frozen spec and its journal can make the first checks pass; only the
last one, against a copy they cannot rewrite, catches that.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runner.engine.runview import FrozenSpecs
from runner.errors import EXIT_FAILED, EXIT_OK, JournalCorrupt, RunnerError, UsageError
from runner.machine import DecisionRecord
from runner.review.signing import signature_problem, signed_by
from runner.spec import ResolvedSpec, load_spec
from runner.spec.reviewers import ReviewerSpec
from runner.store.journal import Journal
from runner.store.run_folder import RunFolder

__all__ = ["verify_run"]


def _decision_problem(record: dict[str, Any], run_id: str, reviewers: list[ReviewerSpec]) -> tuple[str, str | None]:
    """A label for the decision and why it fails (None when it holds)."""
    try:
        decision = DecisionRecord.model_validate(record)
    except ValidationError as exc:
        return "a decision", f"not a decision record ({exc.error_count()} problems)"
    label = f"decision {decision.decision} at gate '{decision.gate}' (iteration {decision.iteration}) by '{decision.reviewer}'"
    return label, signature_problem(decision, run_id, reviewers)


def _reviewer_set(reviewers: list[ReviewerSpec]) -> set[tuple[str, str]]:
    return {(r.name, r.key) for r in reviewers}


@dataclass
class _Seen:
    """What the journal showed: the frozen specs in force in turn (None: spec.json), its line
    count, the decisions journalled (gate, iteration) and every failure found."""

    in_force: list[str | None] = field(default_factory=lambda: [None])
    lines: int = 0
    decided: set[tuple[Any, Any]] = field(default_factory=set)
    fails: list[str] = field(default_factory=list)


def _check_event(folder: RunFolder, specs: FrozenSpecs, event: dict[str, Any], where: str, seen: _Seen) -> None:
    kind = event.get("kind")
    if kind == "run_started" and event.get("frozen_sha256"):
        actual = hashlib.sha256(folder.read_frozen_spec(None)).hexdigest()
        if actual != event["frozen_sha256"]:
            seen.fails.append(f"{folder.spec_json}: the frozen spec was changed after the run started "
                              f"(sha256 {actual[:12]}, journal says {event['frozen_sha256'][:12]})")
    elif kind == "spec_amended":
        seen.in_force.append(str(event.get("frozen")))
        specs.spec(seen.in_force[-1])  # its bytes must have the hash it is named by
    elif kind == "decision_recorded":
        raw = event.get("decision")
        decision: dict[str, Any] = raw if isinstance(raw, dict) else {}
        seen.decided.add((decision.get("gate"), decision.get("iteration")))
        label, problem = _decision_problem(decision, folder.run_id, specs.spec(seen.in_force[-1]).spec.reviewers)
        if problem is not None:
            seen.fails.append(f"{where}: {label}: {problem}")


def _check_journal(folder: RunFolder, specs: FrozenSpecs) -> _Seen:
    """The chain line by line, the frozen specs, the journalled decisions' signatures."""
    seen = _Seen()
    try:
        read = Journal(folder.events).read(repair=False)
    except JournalCorrupt as exc:
        seen.fails.append(f"{exc.path}:{exc.line}: the hash chain breaks here ({exc.reason})")
        return seen
    if read.repaired_tail is not None:
        seen.fails.append(f"{folder.events}: the last line is damaged or was changed ({read.repaired_tail})")
    seen.lines = len(read.records)
    for record in read.records:
        where = f"{folder.events}:{record['seq']}"
        try:
            _check_event(folder, specs, record["event"] if isinstance(record["event"], dict) else {}, where, seen)
        except RunnerError as exc:
            seen.fails.append(f"{where}: {exc}")
    return seen


def _check_recorded(folder: RunFolder, specs: FrozenSpecs, seen: _Seen) -> None:
    """Decisions `decide` recorded that no runner has journalled yet."""
    for found in folder.read_decisions():
        if (found.get("gate"), found.get("iteration")) in seen.decided:
            continue
        label, problem = _decision_problem(found, folder.run_id, specs.spec(seen.in_force[-1]).spec.reviewers)
        if problem is not None:
            seen.fails.append(f"{folder.decisions_dir}/{found.get('gate')}.i{found.get('iteration')}: {label}: {problem}")


def _check_trusted(folder: RunFolder, specs: FrozenSpecs, trusted: ResolvedSpec, file: str, seen: _Seen) -> None:
    """Every spec the run was under lists exactly the trusted copy's reviewers."""
    want = _reviewer_set(trusted.spec.reviewers)
    for frozen in dict.fromkeys(seen.in_force):
        try:
            have = _reviewer_set(specs.spec(frozen).spec.reviewers)
        except RunnerError:
            continue  # reported by the journal check
        if have != want:
            extra = ", ".join(sorted(n for n, _ in have - want)) or "none"
            missing = ", ".join(sorted(n for n, _ in want - have)) or "none"
            seen.fails.append(f"{folder.frozen_spec_path(frozen)}: its reviewers differ from {file}'s "
                              f"(not in {file}: {extra}; missing: {missing})")


def verify_run(args: argparse.Namespace, state_dir: Path) -> int:
    """Print what holds or every failure; exit 0 when everything holds, 1 otherwise."""
    folder = RunFolder(state_dir, args.run_id)
    if not folder.exists():
        raise UsageError(f"no run '{args.run_id}' in {state_dir}")
    trusted = load_spec(args.spec, check_uses=False, check_models=False) if args.spec else None
    specs = FrozenSpecs(folder)
    try:
        specs.spec(None)
    except RunnerError as exc:
        print(f"FAIL {exc}")
        return EXIT_FAILED
    seen = _check_journal(folder, specs)
    _check_recorded(folder, specs, seen)
    if trusted is not None:
        _check_trusted(folder, specs, trusted, args.spec, seen)
    for line in seen.fails:
        print(f"FAIL {line}")
    if seen.fails:
        print(f"run {args.run_id}: {len(seen.fails)} check(s) failed")
        return EXIT_FAILED
    signers = sorted({s for s in (signed_by(DecisionRecord.model_validate(d)) for d in folder.read_decisions()) if s})
    print(f"run {args.run_id}: ok: journal of {seen.lines} lines, hash chain intact; {len(seen.decided)} "
          "journalled decision(s), each signature valid" + (f" ({', '.join(signers)})" if signers else "")
          + (f"; reviewers equal {args.spec}'s" if trusted is not None else ""))
    return EXIT_OK
