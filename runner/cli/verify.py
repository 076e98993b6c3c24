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
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runner.engine.runview import FrozenSpecs
from runner.errors import EXIT_FAILED, EXIT_OK, JournalCorrupt, RunnerError, UsageError
from runner.machine import DecisionRecord
from runner.review.signing import signature_problem, signed_by
from runner.spec import load_spec
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


def _check_journal(folder: RunFolder, specs: FrozenSpecs, fails: list[str]) -> tuple[list[str | None], int, int]:
    """Check the chain, the frozen specs and the journalled decisions; return the frozen
    specs the run was under (None: spec.json), the journal's line count and the decisions seen."""
    try:
        read = Journal(folder.events).read(repair=False)
    except JournalCorrupt as exc:
        fails.append(f"{exc.path}:{exc.line}: the hash chain breaks here ({exc.reason})")
        return [None], 0, 0
    if read.repaired_tail is not None:
        fails.append(f"{folder.events}: the last line is damaged or was changed ({read.repaired_tail})")
    in_force: list[str | None] = [None]
    decisions = 0
    for record in read.records:
        event, where = record["event"], f"{folder.events}:{record['seq']}"
        kind = event.get("kind") if isinstance(event, dict) else None
        try:
            if kind == "run_started" and event.get("frozen_sha256"):
                actual = hashlib.sha256(folder.read_frozen_spec(None)).hexdigest()
                if actual != event["frozen_sha256"]:
                    fails.append(f"{folder.spec_json}: the frozen spec was changed after the run started "
                                 f"(sha256 {actual[:12]}, journal says {event['frozen_sha256'][:12]})")
            elif kind == "spec_amended":
                in_force.append(str(event.get("frozen")))
                specs.spec(in_force[-1])
            elif kind == "decision_recorded":
                decisions += 1
                label, problem = _decision_problem(event.get("decision"), folder.run_id,
                                                   specs.spec(in_force[-1]).spec.reviewers)
                if problem is not None:
                    fails.append(f"{where}: {label}: {problem}")
        except RunnerError as exc:
            fails.append(f"{where}: {exc}")
    return in_force, len(read.records), decisions


def verify_run(args: argparse.Namespace, state_dir: Path) -> int:
    """Print what holds or every failure; exit 0 when everything holds, 1 otherwise."""
    folder = RunFolder(state_dir, args.run_id)
    if not folder.exists():
        raise UsageError(f"no run '{args.run_id}' in {state_dir}")
    trusted = load_spec(args.spec, check_uses=False, check_models=False) if args.spec else None
    specs = FrozenSpecs(folder)
    fails: list[str] = []
    try:
        specs.spec(None)
    except RunnerError as exc:
        print(f"FAIL {exc}")
        return EXIT_FAILED
    in_force, lines, decisions = _check_journal(folder, specs, fails)
    journalled = set()
    for record in Journal(folder.events).read(repair=False).records if lines else []:
        d = record["event"].get("decision") if record["event"].get("kind") == "decision_recorded" else None
        if isinstance(d, dict):
            journalled.add((d.get("gate"), d.get("iteration")))
    for found in folder.read_decisions():
        if (found.get("gate"), found.get("iteration")) in journalled:
            continue
        label, problem = _decision_problem(found, folder.run_id, specs.spec(in_force[-1]).spec.reviewers)
        if problem is not None:
            path = folder.decision_path(str(found.get("gate")), int(found.get("iteration", 1)))
            fails.append(f"{path}: {label}: {problem}")
    if trusted is not None and not fails:
        want = _reviewer_set(trusted.spec.reviewers)
        for frozen in dict.fromkeys(in_force):
            have = _reviewer_set(specs.spec(frozen).spec.reviewers)
            if have != want:
                extra = ", ".join(sorted(n for n, _ in have - want)) or "none"
                missing = ", ".join(sorted(n for n, _ in want - have)) or "none"
                fails.append(f"{folder.frozen_spec_path(frozen)}: its reviewers differ from {args.spec}'s "
                             f"(not in {args.spec}: {extra}; missing: {missing})")
    for line in fails:
        print(f"FAIL {line}")
    if fails:
        print(f"run {args.run_id}: {len(fails)} check(s) failed")
        return EXIT_FAILED
    signers = sorted({s for s in (signed_by(DecisionRecord.model_validate(d)) for d in folder.read_decisions()) if s})
    print(f"run {args.run_id}: ok: journal of {lines} lines, hash chain intact; {decisions} journalled "
          f"decision(s), each signature valid" + (f" ({', '.join(signers)})" if signers else "")
          + (f"; reviewers equal {args.spec}'s" if trusted is not None else ""))
    return EXIT_OK
