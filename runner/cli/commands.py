"""The commands behind `runner`: each takes parsed arguments and returns an exit code.

Commands that start or continue work (`run`, `resume`) hold the run's lock through a
`RunEngine`; the others only read (through `runview`) or, for `decide`, create one decision
file exclusively. Output meant for scripts goes to stdout (`--json`); log lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from runner.engine.runview import RunView, open_view, plan_of
from runner.errors import EXIT_AT_GATE, EXIT_OK, Refused, UsageError
from runner.machine import GateStep, RunStatus
from runner.review.signing import signed_by
from runner.spec import ResolvedSpec, load_spec
from runner.store.journal import Journal
from runner.store.run_folder import RunFolder, list_runs

__all__ = ["cmd_decide", "cmd_gate", "cmd_log", "cmd_plan", "cmd_resume", "cmd_run", "cmd_status", "cmd_validate",
           "cmd_verify"]


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def cmd_validate(args: argparse.Namespace, state_dir: Path) -> int:
    """Parse and check a spec; every problem is reported at once (by `SpecError`)."""
    spec = load_spec(args.spec, args.sets)
    if args.json:
        _print_json({"valid": True, "spec": args.spec, "name": spec.spec.name, "sha256": spec.sha256,
                     "phases": [s.name for s in plan_of(spec).steps]})
    else:
        print(f"{args.spec}: valid ({len(plan_of(spec).steps)} steps, spec sha256 {spec.sha256[:12]})")
    return EXIT_OK


def _describe_spec(spec: ResolvedSpec) -> None:
    print(f"run spec '{spec.spec.name}' (seed {spec.spec.seed}, sha256 {spec.sha256[:12]})")
    if spec.overrides:
        print("overrides: " + ", ".join(f"{k}={v!r}" for k, v in spec.overrides.items()))
    for i, step in enumerate(plan_of(spec).steps, 1):
        if isinstance(step, GateStep):
            print(f"{i:>3}. gate {step.name}: iterate_from={step.iterate_from}"
                  f" may_set={list(step.may_set) if step.may_set is not None else 'all'}"
                  f" max_iterations={step.max_iterations or 'unlimited'}")
            for check in step.checks:
                print(f"       check {check}")
            continue
        phase = spec.phase(step.name)
        kind = f"uses {phase.uses}" if phase.uses else f"run: {spec.resolved_run(step.name, spec.params)}"
        print(f"{i:>3}. phase {step.name}: {kind}")
        model = spec.resolved_model(step.name, spec.params)
        if model is not None and phase.uses is not None:
            print(f"       model = {model['path']} (dtype {model['dtype']}, device {model['device']})")
        for key, value in spec.resolved_with(step.name, spec.params).items():
            print(f"       {key} = {json.dumps(value, default=str)}")
        for key, text in spec.resolved_env(step.name, spec.params).items():
            print(f"       env {key} = {json.dumps(text)}")


def cmd_plan(args: argparse.Namespace, state_dir: Path) -> int:
    """Without running anything: the spec's steps, or what `resume` of a run would do."""
    if args.run_id and args.spec:
        raise UsageError("runner plan: give either SPEC or --run RUN_ID, not both "
                         "(to plan an amend: runner plan --run RUN_ID --spec SPEC)")
    if args.amend_spec and not args.run_id:
        raise UsageError("runner plan: --spec goes with --run RUN_ID (for a new run: runner plan SPEC)")
    if args.run_id:
        if args.sets and not args.amend_spec:
            raise UsageError("runner plan --run: --set goes with --spec SPEC (an amend), or with a new run's spec")
        if args.amend_spec:
            from runner.engine.amend import describe_amend, prepare_amend  # noqa: PLC0415

            view = open_view(state_dir, args.run_id)
            change = prepare_amend(view.folder, view.state, view.spec, view.plan, args.amend_spec, args.sets)
            print("\n".join(describe_amend(change) + ["nothing was changed (this is a plan)"]))
            return EXIT_OK
        from runner.engine.plan_run import describe_resume  # noqa: PLC0415

        print(describe_resume(open_view(state_dir, args.run_id)))
        return EXIT_OK
    if not args.spec:
        raise UsageError("runner plan: give a SPEC file or --run RUN_ID")
    _describe_spec(load_spec(args.spec, args.sets, check_models=False))
    return EXIT_OK


def _console_steps(engine: Any) -> list[Any]:
    """The run's plan for the console: each step's kind and, for this iteration, what is done."""
    from runner.console.view import StepInfo  # noqa: PLC0415

    steps = []
    for step in engine.plan.steps:
        if isinstance(step, GateStep):
            passed = any(d.gate == step.name and d.iteration == engine.st.iteration and d.decision == "proceed"
                         for d in engine.st.decisions)
            steps.append(StepInfo(step.name, "gate", "passed" if passed else "pending"))
            continue
        phase = engine.spec.phase(step.name)
        inst = engine.st.instance(step.name, engine.st.iteration)
        done = inst is not None and str(inst.status) in ("succeeded", "reused")
        steps.append(StepInfo(step.name, str(phase.uses) if phase.uses else "shell",
                              str(inst.status) if done else "pending",
                              inst.wall_s if done else None, inst.metrics if done else {}))
    return steps


def _console(verbose: bool) -> Any:
    """The live view on a terminal, one line per phase elsewhere (see runner.console.view)."""
    from runner.console.view import LineView, console_mode  # noqa: PLC0415

    if console_mode(sys.stderr) == "live":
        from runner.console.live import LiveView  # noqa: PLC0415

        return LiveView(sys.stderr, verbose)
    return LineView(sys.stderr, verbose)


def _drive(engine: Any, wait: bool, verbose: bool = False) -> int:
    from runner.console.view import use_view  # noqa: PLC0415

    try:
        with use_view(_console(verbose)) as view:
            view.begin(engine.folder.run_id, _console_steps(engine))
            code = engine.drive(wait)
    except KeyboardInterrupt:
        if engine.state is not None and engine.state.status == RunStatus.AWAITING_DECISION:
            engine.log.info("wait_interrupted", gate=engine.state.pending_gate)
            return EXIT_AT_GATE
        raise
    finally:
        engine.close()
    return code


def cmd_run(args: argparse.Namespace, state_dir: Path) -> int:
    """Validate the spec, then start a new run and drive it to a gate or the end."""
    from runner.engine.driver import RunEngine  # noqa: PLC0415

    spec = load_spec(args.spec, args.sets)  # every problem reported before anything is written
    engine = RunEngine.start(spec, state_dir, args.run_id)
    print(f"run {engine.folder.run_id} in {engine.folder.root}", flush=True)
    return _drive(engine, args.wait, getattr(args, "verbose", False))


def cmd_resume(args: argparse.Namespace, state_dir: Path) -> int:
    """Continue a run; a completed, aborted or undecided one exits at once with its code."""
    from runner.engine.driver import RunEngine  # noqa: PLC0415

    if args.sets and not args.spec:
        raise UsageError("runner resume: --set goes with --spec SPEC (an amend); to change a parameter "
                         "at a gate, decide iterate with --set")
    if args.spec:
        return _amend(args, state_dir)
    folder = RunFolder(state_dir, args.run_id)
    if folder.exists() and not Journal(folder.events).read(repair=False).records:
        # Its `run` died before journalling the start: `open` finishes the start.
        engine = RunEngine.open(state_dir, args.run_id)
        return _drive(engine, args.wait, getattr(args, "verbose", False))
    view = open_view(state_dir, args.run_id)
    finished = {RunStatus.COMPLETED: EXIT_OK, RunStatus.ABORTED: 5}
    # `journalled`: an ABORT recorded by `decide` but not yet journalled is journalled below.
    if view.journalled.status in finished:
        print(f"run {args.run_id} is already {view.journalled.status}")
        return finished[view.journalled.status]
    if view.state.status == RunStatus.AWAITING_DECISION and not args.wait:
        print(f"run {args.run_id} awaits a decision at gate '{view.state.pending_gate}': "
              f"runner gate {args.run_id}; runner decide {args.run_id} --gate {view.state.pending_gate} ...")
        return EXIT_AT_GATE
    engine = RunEngine.open(state_dir, args.run_id)
    engine.recover()
    return _drive(engine, args.wait, getattr(args, "verbose", False))


def _phase_entry(view: RunView, instance: Any) -> dict[str, Any]:
    """A phase instance as `status --json` shows it, with `output_dir`: the absolute folder
    of its outputs (for a reused instance, the folder of the instance it reuses)."""
    entry: dict[str, Any] = instance.model_dump(mode="json")
    folder = view.folder.phase_dir(instance.name, instance.reused_from or instance.iteration)
    entry["output_dir"] = str(folder.absolute())
    return entry


def _amend(args: argparse.Namespace, state_dir: Path) -> int:
    """`resume --spec`: check the amend without the lock (a refusal writes nothing), then take
    the run, put the new spec in force and continue."""
    from runner.engine.amend import describe_amend, prepare_amend  # noqa: PLC0415
    from runner.engine.driver import RunEngine  # noqa: PLC0415

    view = open_view(state_dir, args.run_id)
    prepare_amend(view.folder, view.state, view.spec, view.plan, args.spec, args.sets)
    engine = RunEngine.open(state_dir, args.run_id)
    try:
        change = engine.amend(args.spec, args.sets)
    except BaseException:
        engine.close()
        raise
    print("\n".join(describe_amend(change)), flush=True)
    return _drive(engine, args.wait)


def status_json(view: RunView) -> dict[str, Any]:
    """The contract's `status --json` object, plus provenance and budget figures."""
    state = view.state
    budget = view.spec.spec.budget
    gpu_s = view.gpu_seconds()
    rate = budget.gpu_hour_usd if budget is not None else None
    return {
        "run_id": state.run_id,
        "name": state.name,
        "status": view.status,
        "iteration": state.iteration,
        # A decided gate is no longer pending (the contract), though the machine keeps its
        # name until `resume` applies the decision.
        "pending_gate": state.pending_gate if state.status == RunStatus.AWAITING_DECISION else None,
        "params": state.params,
        "phases": [_phase_entry(view, p) for p in state.phases],
        "decisions": [{**d.model_dump(mode="json"), "signed_by": signed_by(d)} for d in state.decisions],
        "amendments": [{"at": a.at, "old_sha256": a.old_sha256, "new_sha256": a.new_sha256}
                       for a in state.amendments],
        "failure": state.failure,
        "gpu_seconds": round(gpu_s, 3),
        "cost_usd": round(gpu_s / 3600 * rate, 4) if rate else None,
        "max_usd": budget.max_usd if budget is not None else None,
        "run_dir": str(view.folder.root),
    }


def _print_table(renderable: Any) -> None:
    """A rich table on stdout: coloured on a terminal, plain lines (160 wide at most) in a pipe."""
    if sys.stdout.isatty():
        from rich.console import Console  # noqa: PLC0415

        Console(highlight=False).print(renderable)
        return
    from runner.console.tables import render_text  # noqa: PLC0415

    for line in render_text(renderable):
        print(line)


def _run_row(state_dir: Path, run_id: str) -> dict[str, Any]:
    """One run of the state dir for `status` without a run id (plain data for the table)."""
    try:
        view = open_view(state_dir, run_id)
    except Exception as exc:  # one broken run folder must not hide the others
        return {"run_id": run_id, "status": "unreadable", "error": str(exc)}
    state = view.state
    current = [p for p in state.phases if p.iteration == state.iteration]
    done = sum(1 for p in current if str(p.status) in ("succeeded", "reused"))
    phases = sum(1 for step in view.plan.steps if not isinstance(step, GateStep))
    pending = state.pending_gate if state.status == RunStatus.AWAITING_DECISION else None
    return {"run_id": run_id, "name": state.name, "status": view.status, "iteration": state.iteration,
            "pending_gate": pending, "phases": f"{done}/{phases}", "gpu_seconds": view.gpu_seconds()}


def cmd_status(args: argparse.Namespace, state_dir: Path) -> int:
    """One run in detail, or every run of the state dir one row each (`--json`: the contract's)."""
    if args.run_id is None:
        rows = [_run_row(state_dir, run_id) for run_id in list_runs(state_dir)]
        if args.json:
            _print_json([{k: r[k] for k in ("run_id", "name", "status", "iteration", "pending_gate", "error")
                          if k in r} for r in rows])
        elif rows:
            from runner.console.tables import run_list_table  # noqa: PLC0415

            _print_table(run_list_table(rows))
        return EXIT_OK
    view = open_view(state_dir, args.run_id)
    data = status_json(view)
    if args.json:
        _print_json(data)
        return EXIT_OK
    from runner.console.tables import status_block  # noqa: PLC0415

    kinds = {step.name: str(view.spec.phase(step.name).uses or "shell")
             for step in view.plan.steps if not isinstance(step, GateStep)}
    _print_table(status_block(data, kinds))
    return EXIT_OK


def _html_target(arg: str) -> Path | None:
    """`--html FILE` checked before anything is written; None: the gate folder's packet.html."""
    if not arg:
        return None
    target = Path(arg).expanduser()
    if target.is_dir():
        raise UsageError(f"runner gate --html: {arg} is a folder; give a file name, e.g. {target / 'review.html'}")
    if not target.parent.is_dir():
        raise UsageError(f"runner gate --html: folder {target.parent} does not exist; create it or choose another FILE")
    return target.resolve()


def cmd_gate(args: argparse.Namespace, state_dir: Path) -> int:
    """Print the pending gate's review packet (Markdown, JSON with --json, or an HTML page)."""
    html = getattr(args, "html", None)
    if html is not None and args.json:
        raise UsageError("runner gate: give either --json or --html, not both")
    target = _html_target(html) if html is not None else None
    view = open_view(state_dir, args.run_id)
    state = view.state
    if state.pending_gate is None or state.status not in (RunStatus.AWAITING_DECISION, RunStatus.READY):
        raise Refused(f"run '{args.run_id}' has no pending gate (status: {view.status})")
    gate_dir = view.folder.gate_dir(state.pending_gate, state.iteration)
    if html is not None:
        from runner.review.html_page import write_html  # noqa: PLC0415 - only this option renders HTML

        packet = json.loads((gate_dir / "packet.json").read_text(encoding="utf-8"))
        decisions = [d.model_dump(mode="json") for d in state.decisions]
        print(write_html(gate_dir, packet, decisions, state_dir.resolve(), target))
    elif args.json:
        print((gate_dir / "packet.json").read_text(encoding="utf-8"), end="")
    else:
        print((gate_dir / "packet.md").read_text(encoding="utf-8"), end="")
    if args.out:  # after --html, so the copy holds the page just written
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(gate_dir.iterdir()):
            shutil.copyfile(f, out / f.name)
    return EXIT_OK


def cmd_log(args: argparse.Namespace, state_dir: Path) -> int:
    """The transition journal, oldest first."""
    view = open_view(state_dir, args.run_id)
    records = Journal(view.folder.events).read(repair=False).records
    for r in records:
        if args.json:
            print(json.dumps(r, ensure_ascii=False))
            continue
        ev = dict(r["event"])
        kind = ev.pop("kind")
        ev.pop("at", None)
        detail = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in ev.items() if v not in (None, {}, []))
        print(f"{r['seq']:>5}  {r['at']}  {kind:<18} {detail}")
    return EXIT_OK


def cmd_decide(args: argparse.Namespace, state_dir: Path) -> int:
    """Record a gate decision (see `runner.cli.decide`)."""
    from runner.cli.decide import record_decision  # noqa: PLC0415

    return record_decision(args, state_dir)




def cmd_verify(args: argparse.Namespace, state_dir: Path) -> int:
    """Check the journal's hash chain and every decision's signature (see `runner.cli.verify`)."""
    from runner.cli.verify import verify_run  # noqa: PLC0415

    return verify_run(args, state_dir)
