"""The driver: asks the pure machine what comes next, does it, and makes each step durable.

Every transition is first applied to the pure machine (so an illegal one fails before anything
is written), then appended to the fsync'd journal, then written as an atomic snapshot, then
logged. A phase's own work is made durable by its batch commits (`ctx.batches`). A process
that dies anywhere loses at most the batch in flight: `resume` replays the journal, turns a
phase left `running` back to `pending`, discards uncommitted batch files, and goes on.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from runner.console.logs import attach_run_log, get_logger
from runner.engine.manifest import build_manifest
from runner.engine.planning import find_reusable, fingerprint_of, inputs_of, phase_payload
from runner.engine.runview import load_frozen_spec, plan_of, replay
from runner.errors import EXIT_ABORTED, EXIT_AT_GATE, EXIT_FAILED, EXIT_OK, PhaseError
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
from runner.spec import ResolvedSpec
from runner.store.atomic import dumps_json, write_json_atomic
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
        self.log.info("run_created", run_id=folder.run_id, spec=str(spec.source_path),
                      spec_sha256=spec.sha256, git_commit=manifest["git"]["commit"])
        self._emit(RunStarted(run_id=folder.run_id, name=spec.spec.name, params=spec.params))

    @classmethod
    def open(cls, state_dir: Path, run_id: str) -> RunEngine:
        """Take the lock of an existing run and rebuild its state from the journal."""
        folder = RunFolder(Path(state_dir).absolute(), run_id)  # absolute: see `start`
        spec = load_frozen_spec(folder)
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
        engine.state = replay(read.records, engine.plan, folder.read_snapshot())
        folder.write_snapshot(engine.state.model_dump(mode="json"))
        return engine

    def close(self) -> None:
        """Release the lock (the run stays resumable from its journal)."""
        self.lock.release()

    # -- transitions -----------------------------------------------------------------------
    def _emit(self, event: Any) -> None:
        new = apply(self.state, event, self.plan)
        self.journal.append(event.model_dump(mode="json"))
        # The fsync'd journal is the truth; the snapshot is a cache that `replay` repairs when
        # it lags or is unreadable, so it is renamed into place atomically without an fsync.
        self.folder.write_snapshot(new.model_dump(mode="json"), durable=False)
        self.state = new
        self.log.info("transition", event_kind=event.kind, status=str(new.status),
                      iteration=new.iteration, seq=new.seq, **_event_summary(event))

    @property
    def st(self) -> RunState:
        assert self.state is not None, "engine used before start/open"
        return self.state

    # -- the loop ----------------------------------------------------------------------------
    def recover(self) -> None:
        """After a crash or failure, make the run `running` again (resume only)."""
        if self.st.status in (RunStatus.RUNNING, RunStatus.FAILED):
            self._emit(Resumed(at=now()))

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
                self._emit(RunCompleted(at=now()))
                self.log.info("run_completed", run_id=self.folder.run_id)
                return EXIT_OK
            elif self.st.status == RunStatus.AWAITING_DECISION:
                if not self._take_decision(wait):
                    return EXIT_AT_GATE
            elif self.st.status == RunStatus.READY:
                self._emit(Resumed(at=now()))
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
        self._emit(DecisionRecorded(decision=record))
        self.log.info("decision_applied", gate=gate, iteration=iteration, decision=record.decision,
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
        packet = build_packet(self.st, gate, outcomes, self._previous_params(), before, samples, review_md,
                              headline_md)
        write_packet(self.folder.gate_dir(gate, self.st.iteration), packet, assets)
        self._emit(GateReached(gate=gate, checks=outcomes, packet_sha256=packet["packet_sha256"], at=now()))
        failing = [c.expr for c in outcomes if not c.passed]
        self.log.info("gate_reached", gate=gate, iteration=self.st.iteration, failing_checks=failing,
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
            self._emit(BudgetExhausted(reason=reason, at=now()))
            self.log.error("budget_exhausted", reason=reason)
            return False
        phase = self.spec.phase(name)
        payload = phase_payload(self.spec, self.plan, self.st, name, self._records_path)
        fingerprint = fingerprint_of(payload)
        earlier = find_reusable(self.st, name, fingerprint)
        if earlier is not None:
            self._emit(PhaseReused(name=name, fingerprint=fingerprint, source_iteration=earlier.iteration,
                                   metrics=earlier.metrics, at=now()))
            self.log.info("phase_reused", phase=name, source_iteration=earlier.iteration)
            return True
        self._emit(PhaseStarted(name=name, fingerprint=fingerprint, at=now()))
        out_dir = self.folder.phase_dir(name, self.st.iteration)
        if phase.run is not None and out_dir.exists():
            shutil.rmtree(out_dir)  # a shell phase starts clean; Python phases keep their batches
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
        log.info("phase_started", attempt=self.st.instance(name, self.st.iteration).attempts)
        start = time.monotonic()
        try:
            outcome = execute_phase(job, on_retry=lambda n, e, w: log.warning(
                "phase_retry", attempt=n, error=describe_error(e), wait_s=round(w, 3)))
        except Exception as exc:
            wall = time.monotonic() - start
            self._emit(PhaseFailed(name=name, error=describe_error(exc), wall_s=wall, used_cuda=ctx.used_cuda, at=now()))
            log.error("phase_failed", error=describe_error(exc), duration_s=round(wall, 3),
                      hint=f"fix it, then: runner resume {self.folder.run_id}")
            return False
        write_json_atomic(out_dir / "metrics.json", outcome.metrics)
        self._emit(PhaseSucceeded(name=name, metrics=outcome.metrics, wall_s=outcome.wall_s,
                                  used_cuda=outcome.used_cuda, at=now()))
        log.info("phase_finished", duration_s=round(outcome.wall_s, 3), metrics=outcome.metrics)
        return True

    def _git_commit(self) -> str | None:
        try:
            return json.loads(self.folder.manifest.read_text(encoding="utf-8"))["git"]["commit"]
        except (OSError, ValueError, KeyError):
            return None


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


def _event_summary(event: Any) -> dict[str, Any]:
    """The few fields of an event worth a log line (not whole metric tables)."""
    keep = ("name", "gate", "error", "reason", "wall_s", "source_iteration")
    data = event.model_dump(mode="json")
    return {k: data[k] for k in keep if k in data}
