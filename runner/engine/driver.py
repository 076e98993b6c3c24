"""The driver: asks the pure machine what comes next, does it, and makes each step durable.

Every transition is first applied to the pure machine (so an illegal one fails before anything
is written), then appended to the fsync'd journal, then written as an atomic snapshot, then
logged. A phase's own work is made durable by its batch commits (`ctx.batches`). A process
that dies anywhere loses at most the batch in flight: `resume` replays the journal, turns a
phase left `running` back to `pending`, discards uncommitted batch files, and goes on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from runner.console.logs import attach_run_log, get_logger
from runner.engine.amend import AmendChange, prepare_amend
from runner.engine.hints import failure_hint
from runner.engine.manifest import build_manifest
from runner.engine.planning import find_reusable, fingerprint_of, inputs_of, phase_payload
from runner.engine.runview import FrozenSpecs, plan_of, replay
from runner.errors import EXIT_ABORTED, EXIT_AT_GATE, EXIT_FAILED, EXIT_OK, PhaseError, Refused
from runner.machine import (
    BudgetExhausted,
    DecisionRecord,
    DecisionRecorded,
    Finish,
    GateReached,
    GateStep,
    PhaseFailed,
    PhaseReused,
    PhaseStarted,
    PhaseSucceeded,
    Plan,
    ReachGate,
    Resumed,
    RunCompleted,
    RunPhase,
    RunStarted,
    RunState,
    RunStatus,
    apply,
    next_step,
)
from runner.phases.context import PhaseContext
from runner.phases.execute import PhaseJob, describe_error, execute_phase
from runner.review.gates import build_packet, evaluate_checks, write_packet
from runner.review.signing import signature_problem
from runner.spec import ResolvedSpec
from runner.store.atomic import dumps_json, write_json_atomic
from runner.store.failpoints import crash_point
from runner.store.journal import Journal, utc_now
from runner.store.lock import RunLock
from runner.store.run_folder import RunFolder, new_run_id

__all__ = ["RunEngine", "now"]

WAIT_POLL_S = 0.2


def now() -> str:
    """UTC timestamp for events (events carry time; the machine never reads a clock)."""
    return utc_now()


class RunEngine:
    """One process's hold on one run: the lock, the journal, the state, the log."""

    def __init__(self, folder: RunFolder, spec: ResolvedSpec, lock: RunLock) -> None:
        self.folder = folder
        self.spec = spec
        self.plan = plan_of(spec)
        self.lock = lock
        self.journal = Journal(folder.events)
        self.state: RunState | None = None
        self.log = get_logger()
        self.specs = FrozenSpecs(folder)

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def start(cls, spec: ResolvedSpec, state_dir: Path, run_id: str | None) -> RunEngine:
        """Create the run folder, freeze the spec, write the manifest, take the lock, start."""
        # Absolute: a shell phase runs in the spec's folder, so a relative RUNNER_OUTPUT_DIR
        # (from a relative --state-dir) would point elsewhere.
        folder = RunFolder(Path(state_dir).absolute(), run_id or new_run_id(spec.spec.name))
        folder.create_with_files({folder.spec_yaml.name: spec.source_text.encode(),
                                  folder.spec_json.name: dumps_json(spec.to_frozen())})
        lock = RunLock(folder.root, folder.run_id)
        lock.acquire()
        attach_run_log(folder.log)
        engine = cls(folder, spec, lock)
        engine._start_journal()
        return engine

    def _start_journal(self) -> None:
        """Write the manifest and journal `RunStarted` (also what `open` finishes when the
        `run` that created the folder died before journalling it)."""
        spec, folder = self.spec, self.folder
        manifest = build_manifest(folder.run_id, spec.sha256, spec.spec_dir)
        write_json_atomic(folder.manifest, manifest)
        frozen_sha256 = hashlib.sha256(folder.read_frozen_spec(None)).hexdigest()
        self._emit(RunStarted(run_id=folder.run_id, name=spec.spec.name, params=spec.params,
                              frozen_sha256=frozen_sha256), "run_created",
                   spec=str(spec.source_path), spec_sha256=spec.sha256, git_commit=manifest["git"]["commit"])

    @classmethod
    def open(cls, state_dir: Path, run_id: str) -> RunEngine:
        """Take the lock of an existing run and rebuild its state from the journal."""
        folder = RunFolder(Path(state_dir).absolute(), run_id)  # absolute: see `start`
        spec = FrozenSpecs(folder).spec(None)
        lock = RunLock(folder.root, run_id)
        takeover = lock.acquire()
        attach_run_log(folder.log)
        engine = cls(folder, spec, lock)
        if takeover is not None:
            engine.log.warning("lock_taken_over", previous_pid=takeover.previous.pid,
                               previous_host=takeover.previous.host, killed_groups=list(takeover.killed))
        read = engine.journal.read(repair=True)
        if read.repaired_tail is not None:
            engine.log.warning("journal_tail_repaired", detail=read.repaired_tail)
        if not read.records:  # its `run` died after freezing the spec, before journalling the start
            engine.log.warning("run_start_completed", run_id=run_id)
            engine._start_journal()
            return engine
        engine.state = replay(read.records, engine.specs, folder.read_snapshot())
        engine.spec = engine.specs.spec(engine.state.frozen_spec)  # an amended spec, if any
        engine.plan = engine.specs.plan(engine.state.frozen_spec)
        folder.write_snapshot(engine.state.model_dump(mode="json"))
        return engine

    def close(self) -> None:
        """Release the lock (the run stays resumable from its journal)."""
        self.lock.release()

    # -- transitions -----------------------------------------------------------------------
    def _emit(self, event: Any, log_as: str = "transition", level: str = "info",
              plan: Plan | None = None, **fields: Any) -> None:
        """Apply, journal and snapshot `event` (under `plan`, default the plan in force), then
        log it as ONE line named `log_as`.

        One line per transition: the named line (`phase_started`, `gate_reached`, ...) carries
        the transition's fields (`event_kind`, `seq`, `status`) besides its own.
        """
        new = apply(self.state, event, plan or self.plan)
        self.journal.append(event.model_dump(mode="json"))
        # The fsync'd journal is the truth; the snapshot is a cache that `replay` repairs when
        # it lags or is unreadable, so it is renamed into place atomically without an fsync.
        self.folder.write_snapshot(new.model_dump(mode="json"), durable=False)
        self.state = new
        getattr(self.log, level)(log_as, event_kind=event.kind, status=str(new.status),
                                 iteration=new.iteration, seq=new.seq, **{**_event_summary(event), **fields})

    @property
    def st(self) -> RunState:
        assert self.state is not None, "engine used before start/open"
        return self.state

    # -- amending ---------------------------------------------------------------------------
    def amend(self, spec_path: str, sets: list[str]) -> AmendChange:
        """Put a new spec in force (`resume --spec`); `Refused`/`SpecError` change nothing.

        A recorded decision is journalled and applied first (as `resume` would). Then the new
        frozen spec is stored under its content hash and ONE journalled `SpecAmended` names
        it: a kill -9 before that line is durable leaves the old spec in force (and an unused
        file), after it the new one; replay decides, never a mix of the two. The caller checked
        the amend lock-free first (`prepare_amend` on the run's view), so a refusal here means
        the run changed meanwhile.
        """
        if self.st.status == RunStatus.AWAITING_DECISION:
            self._take_decision(wait=False)  # a decision file only `decide` wrote so far
        if self.st.status == RunStatus.READY:
            self._emit(Resumed(at=now()), "run_resumed")
        change = prepare_amend(self.folder, self.st, self.spec, self.plan, spec_path, sets)
        frozen = self.folder.write_frozen_spec(change.frozen_bytes)
        crash_point("amend.frozen_spec_written")
        self._emit(change.event(frozen, now()), "spec_amended", plan=change.new_plan,
                   old_sha256=change.old.sha256, new_sha256=change.new.sha256, frozen=frozen,
                   changed=change.changed,
                   restart_at=change.new_plan.steps[change.restart].name
                   if change.restart < len(change.new_plan.steps) else "(end)")
        self.spec, self.plan = self.specs.spec(frozen), self.specs.plan(frozen)
        return change

    # -- the loop ----------------------------------------------------------------------------
    def recover(self) -> None:
        """After a crash or failure, make the run `running` again (resume only)."""
        if self.st.status in (RunStatus.RUNNING, RunStatus.FAILED):
            self._emit(Resumed(at=now()), "run_resumed")

    def drive(self, wait: bool) -> int:
        """Run steps until the run completes, fails, is aborted or stops at a gate."""
        while True:
            step = next_step(self.st, self.plan)
            if isinstance(step, RunPhase):
                if not self._run_phase(step.name):
                    return EXIT_FAILED
            elif isinstance(step, ReachGate):
                self._reach_gate(step.gate)
            elif isinstance(step, Finish):
                self._emit(RunCompleted(at=now()), "run_completed", run_id=self.folder.run_id)
                return EXIT_OK
            elif self.st.status == RunStatus.AWAITING_DECISION:
                if not self._take_decision(wait):
                    return EXIT_AT_GATE
            elif self.st.status == RunStatus.READY:
                self._emit(Resumed(at=now()), "run_resumed")
            elif self.st.status == RunStatus.ABORTED:
                return EXIT_ABORTED
            elif self.st.status == RunStatus.COMPLETED:
                return EXIT_OK
            else:
                return EXIT_FAILED

    # -- decisions -----------------------------------------------------------------------------
    def _take_decision(self, wait: bool) -> bool:
        """Journal a recorded decision; with `wait`, poll for one. False: stop at the gate."""
        gate, iteration = self.st.pending_gate or "", self.st.iteration
        found = self.folder.decision_for(gate, iteration)
        if found is None and wait:
            self.log.info("waiting_for_decision", gate=gate, iteration=iteration,
                          hint=f"runner decide {self.folder.run_id} --gate {gate} ...")
            while found is None:  # Ctrl-C raises KeyboardInterrupt here; the CLI exits 3
                time.sleep(WAIT_POLL_S)
                found = self.folder.decision_for(gate, iteration)
        if found is None:
            return False
        record = DecisionRecord.model_validate(found)
        problem = signature_problem(record, self.folder.run_id, self.spec.spec.reviewers)
        if problem is not None:
            path = self.folder.decision_path(gate, iteration)
            self.log.error("decision_rejected", gate=gate, iteration=iteration, problem=problem)
            raise Refused(f"{path}: {problem}; this decision was not made by a listed reviewer with "
                          f"`runner decide --sign-with`: remove the file and decide again")
        self._emit(DecisionRecorded(decision=record), "decision_applied", gate=gate, decision=record.decision,
                   reviewer=record.reviewer, set=record.set, override_checks=record.override_checks)
        return True

    # -- gates ---------------------------------------------------------------------------------
    def _previous_params(self) -> dict[str, Any] | None:
        iterates = [d for d in self.st.decisions if d.decision == "iterate"]
        if not iterates:
            return None
        last = iterates[-1]
        path = self.folder.gate_dir(last.gate, last.iteration) / "packet.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))["params"]
        except (OSError, ValueError, KeyError):
            return None

    def _reach_gate(self, gate: str) -> None:
        spec_gate = self.spec.gate(gate)
        outcomes = evaluate_checks(self.st, list(spec_gate.checks))
        index = next(i for i, s in enumerate(self.plan.steps) if s.name == gate)
        earlier = [s.name for s in reversed(self.plan.steps[:index]) if not isinstance(s, GateStep)]
        earlier = [n for n in earlier if self.st.latest_instance(n) is not None]
        review_md, headline_md, assets = None, None, None
        if earlier:  # review material comes from the phase right before the gate
            assets = self._instance_dir(earlier[0])
            review = assets / "review.md"
            review_md = review.read_text(encoding="utf-8") if review.exists() else None
            headline = assets / "headline.md"
            headline_md = headline.read_text(encoding="utf-8") if headline.exists() else None
        # Samples come from the nearest phase that wrote records (a QC phase writes none).
        before, samples = (earlier[0] if earlier else None), []
        for name in earlier:
            samples = _read_records(self._instance_dir(name) / "records.jsonl", limit=5)
            if samples:
                before = name
                break
        may_set = list(spec_gate.may_set) if spec_gate.may_set is not None else None
        packet = build_packet(self.st, gate, outcomes, self._previous_params(), before, samples, review_md,
                              may_set=may_set, headline_md=headline_md)
        write_packet(self.folder.gate_dir(gate, self.st.iteration), packet, assets,
                     self.folder.state_dir.resolve())
        failing = [c.expr for c in outcomes if not c.passed]
        self._emit(GateReached(gate=gate, checks=outcomes, packet_sha256=packet["packet_sha256"], at=now()),
                   "gate_reached", run_id=self.folder.run_id, failing_checks=failing,
                   checks=[c.model_dump(mode="json") for c in outcomes],
                   packet=str(self.folder.gate_dir(gate, self.st.iteration) / "packet.md"),
                   next=f"runner gate {self.folder.run_id}; runner decide {self.folder.run_id} --gate {gate} ...")

    # -- phases ----------------------------------------------------------------------------------
    def _instance_dir(self, name: str) -> Path:
        inst = self.st.latest_instance(name)
        assert inst is not None
        return self.folder.phase_dir(name, inst.reused_from or inst.iteration)

    def _records_path(self, name: str) -> Path | None:
        """The records file of the latest instance of `name` (what its readers read)."""
        return self._instance_dir(name) / "records.jsonl" if self.st.latest_instance(name) else None

    def _read_input(self, phase: str, name: str) -> list[dict[str, Any]]:
        allowed = inputs_of(self.spec, self.plan, phase)
        if name not in allowed:
            raise PhaseError(phase, f"ctx.input('{name}'): not an input of this phase (inputs: {', '.join(allowed) or 'none'})")
        if self.st.latest_instance(name) is None:
            raise PhaseError(phase, f"ctx.input('{name}'): that phase has no output yet")
        return _read_records(self._instance_dir(name) / "records.jsonl")

    def _budget_reason(self) -> str | None:
        budget = self.spec.spec.budget
        if budget is None or budget.max_usd is None or budget.gpu_hour_usd is None:
            return None
        gpu_s = sum(p.wall_s for p in self.st.phases if p.used_cuda and p.status != "reused")
        cost = gpu_s / 3600.0 * budget.gpu_hour_usd
        if cost >= budget.max_usd:
            # 4 significant digits: a small budget must not read "$0.00 of max_usd $0.00"
            return f"budget spent: {gpu_s:.4g} GPU-seconds cost ${cost:.4g} of max_usd ${budget.max_usd:.4g}"
        return None

    def _run_phase(self, name: str) -> bool:
        """Run or reuse one phase instance. False when it failed (the run is then `failed`)."""
        reason = self._budget_reason()
        if reason is not None:
            self._emit(BudgetExhausted(reason=reason, at=now()), "budget_exhausted", level="error")
            return False
        phase = self.spec.phase(name)
        payload = phase_payload(self.spec, self.plan, self.st, name, self._records_path)
        fingerprint = fingerprint_of(payload)
        earlier = find_reusable(self.st, name, fingerprint)
        if earlier is not None:
            self._emit(PhaseReused(name=name, fingerprint=fingerprint, source_iteration=earlier.iteration,
                                   metrics=earlier.metrics, at=now()),
                       "phase_reused", phase=name, kind=_kind(phase), metrics=earlier.metrics)
            return True
        self._emit(PhaseStarted(name=name, fingerprint=fingerprint, at=now()), "phase_started", phase=name,
                   kind=_kind(phase), attempt=self._attempts(name) + 1)
        out_dir = self.folder.phase_dir(name, self.st.iteration)
        if out_dir.exists() and (phase.run is not None or _written_by_other(out_dir, payload)):
            # A shell phase starts clean; a Python phase keeps the batches it committed with
            # this same fingerprint, never those of another spec (after `resume --spec`).
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "fingerprint.json", payload)  # for `plan --run`'s "what changed"
        model_spec = payload["model"]
        resolved_with, resolved_run, env = payload["with"], payload["run"], payload["env"]
        log = self.log.bind(phase=name, iteration=self.st.iteration)
        ctx = PhaseContext(
            run_id=self.folder.run_id, phase=name, iteration=self.st.iteration, run_seed=self.spec.spec.seed,
            params=resolved_with, output_dir=out_dir, run_dir=self.folder.root, cache_dir=self.folder.cache_dir,
            spec_dir=self.spec.spec_dir, spec_sha256=self.spec.sha256, git_commit=self._git_commit(),
            model_spec=model_spec, log=log, read_input=lambda n: self._read_input(name, n),
            input_names=inputs_of(self.spec, self.plan, name),
            input_dirs={n: self._instance_dir(n) for n in inputs_of(self.spec, self.plan, name)
                        if self.st.latest_instance(n) is not None},
        )
        retry = phase.retry
        job = PhaseJob(
            name=name, uses=phase.uses, run=resolved_run, env=env,
            retry_attempts=retry.attempts if retry else 1, retry_on=tuple(retry.on) if retry else (),
            backoff_s=retry.backoff_s if retry else 0.0, max_backoff_s=retry.max_backoff_s if retry else 0.0,
            ctx=ctx, children=self.lock,
            sharding=phase.shards.model_dump(mode="json") if phase.shards is not None else None,
        )
        start = time.monotonic()
        try:
            outcome = execute_phase(job, on_retry=lambda n, e, w: log.warning(
                "phase_retry", attempt=n, error=describe_error(e), wait_s=round(w, 3)))
        except Exception as exc:
            wall = time.monotonic() - start
            self._emit(PhaseFailed(name=name, error=describe_error(exc), wall_s=wall, used_cuda=ctx.used_cuda, at=now()),
                       "phase_failed", level="error", phase=name, kind=_kind(phase), duration_s=round(wall, 3),
                       hint=failure_hint(exc, self.folder.run_id, self.spec.source_path, phase.uses))
            return False
        write_json_atomic(out_dir / "metrics.json", outcome.metrics)
        self._emit(PhaseSucceeded(name=name, metrics=outcome.metrics, wall_s=outcome.wall_s,
                                  used_cuda=outcome.used_cuda, at=now()),
                   "phase_finished", phase=name, kind=_kind(phase), duration_s=round(outcome.wall_s, 3),
                   metrics=outcome.metrics)
        return True

    def _attempts(self, name: str) -> int:
        """Attempts of `name`'s instance in this iteration so far (0 before its first start)."""
        inst = self.st.instance(name, self.st.iteration)
        return inst.attempts if inst is not None else 0

    def _git_commit(self) -> str | None:
        try:
            return json.loads(self.folder.manifest.read_text(encoding="utf-8"))["git"]["commit"]
        except (OSError, ValueError, KeyError):
            return None


def _written_by_other(out_dir: Path, payload: dict[str, Any]) -> bool:
    """Whether the instance folder holds work done for another payload (an amended spec)."""
    try:
        before = json.loads((out_dir / "fingerprint.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # no attempt got as far as its first batch
    return bool(before != json.loads(dumps_json(payload)))


def _read_records(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
                if limit is not None and len(out) >= limit:
                    break
    return out


def _kind(phase: Any) -> str:
    """What a phase is, for the console's choice of metrics: its `uses`, or `shell`."""
    return str(phase.uses) if phase.uses else "shell"


def _event_summary(event: Any) -> dict[str, Any]:
    """The few fields of an event worth a log line (not whole metric tables)."""
    keep = ("name", "gate", "error", "reason", "wall_s", "source_iteration")
    data = event.model_dump(mode="json")
    return {k: data[k] for k in keep if k in data}
