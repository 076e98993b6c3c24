"""The 15k run (issue 15, item 5): the whole Stage-1 flow at 15,000 examples on one GPU.

1. Builds the random-initialised ~1B Llama of `run_pilot.build_model` (not timed as the run).
2. `runner run bench/gpu/stage1_15k.yaml` stops at the pilot gate (exit 3). This script is the
   reviewer: it reads `runner status --json` and the packet (`runner gate --json`), records
   `runner decide RUN --gate G --decision proceed --reviewer script --reason ... --packet SHA`
   (with `--override-checks` when a check fails, as on noise it does; the reason names them),
   then `runner resume`; the same at the scale gate and the release gate, until `resume`
   exits 0. Every runner command is a fresh process, as a user's script would run them.
3. Reports wall seconds per phase (status --json), the runner processes' summed wall (the
   run), the script's time at the gates, GPU-hours (process wall x 1 GPU) and their cost at
   the spec's `budget.gpu_hour_usd`, files in the run folder per record, the SFT and
   evaluation figures and the exported examples; writes `15k.json` and `15k.md` under --out
   and prints the table last.

`--wait` runs the same flow as ONE `runner run --wait` process that holds the model across
the gates while this script decides them (the runner's wall then includes the script's time at
the gates, reported beside it). `--decode-compile` sets RUNNER_DECODE_COMPILE for the run; the default
`auto` (what a user gets) keeps the Triton parts for this bf16 Llama and never compiles it.

A hard wall-clock guard (`--limit-s`, default 560 s for the whole command, model build
included) interrupts the runner process in flight (SIGINT, then SIGKILL of its process group)
and still reports what finished and which phase was in flight: a valid partial measurement.

Run (device):  python bench/gpu/run_15k.py --out $OUT
  smoke:       python bench/gpu/run_15k.py --out $OUT --examples 3000 --sft-steps 50
  one process: python bench/gpu/run_15k.py --out $OUT --wait
  CPU (here):  python bench/gpu/run_15k.py --tiny --out /tmp/15k-tiny
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_pilot import ROOT, build_model

SPEC = ROOT / "bench" / "gpu" / "stage1_15k.yaml"
RUN_ID = "s15k"
REPORT_RESERVE_S = 20.0  # kept back from the limit for status, counting files and the report
HAND_RUN_ESTIMATE = "6-8 GPU-hours"  # the hand-run Stage-1 pilot's estimate for 15k examples
# The tiny fixture model on CPU: every phase, 8 shards, a few SFT steps, in a few minutes.
TINY_SETS = ["pilot_examples=16", "batch_size=16", "critic.batch_size=32",
             "response.max_new_tokens=64", "sft.batch_size=4", "sft.max_seq_len=128",
             "sft.warmup_steps=1", "sft.checkpoint_every=2", "eval.limit=16"]


class Clock:
    """The command's deadline: what is left of `--limit-s`, minus the report's reserve."""

    def __init__(self, limit_s: float) -> None:
        self.start, self.limit_s = time.monotonic(), limit_s

    def left(self) -> float:
        return self.limit_s - REPORT_RESERVE_S - (time.monotonic() - self.start)


def cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    """A quick runner command (status, gate, decide): a fresh process, output captured."""
    return subprocess.run([sys.executable, "-m", "runner", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)


def stop(proc: subprocess.Popen[bytes]) -> int:
    """End a runner process we started (its own process group): SIGINT, the CLI's clean
    interrupt, then SIGKILL of the group after 8 s if it has not ended."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def start(args: list[str], state: Path, log: Path) -> subprocess.Popen[bytes]:
    """`runner run`/`resume` in its own process group, its output appended to `log`."""
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ runner {' '.join(args)}\n")
        out.flush()
        return subprocess.Popen([sys.executable, "-m", "runner", *args, "--state-dir", str(state)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def drive(args: list[str], state: Path, clock: Clock, log: Path) -> dict[str, Any]:
    """One runner process to its exit, or stopped at the deadline: {command, rc, wall_s,
    stopped_at_limit, ended}."""
    started = time.monotonic()
    proc = start(args, state, log)
    stopped = False
    try:
        rc = proc.wait(timeout=max(clock.left(), 1.0))
    except subprocess.TimeoutExpired:
        stopped, rc = True, stop(proc)
    return {"command": "runner " + " ".join(args), "rc": rc,
            "wall_s": round(time.monotonic() - started, 2), "stopped_at_limit": stopped, "ended": utc_now()}


def flow_resume(spec_args: list[str], state: Path, clock: Clock, log: Path
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """run -> exit 3 at a gate -> decide -> resume -> ... until an exit other than 3."""
    steps = [drive(["run", *spec_args], state, clock, log)]
    gates: list[dict[str, Any]] = []
    while steps[-1]["rc"] == 3 and not steps[-1]["stopped_at_limit"] and clock.left() > 1:
        gates.append(decide_gate(state))
        print(f"gate {gates[-1]['gate']}: proceed ({len(gates[-1]['failing_checks'])} checks failing, "
              f"{gates[-1]['script_s']} s)", flush=True)
        steps.append(drive(["resume", RUN_ID], state, clock, log))
    return steps, gates


def flow_wait(spec_args: list[str], state: Path, clock: Clock, log: Path
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One `runner run --wait` process, holding the model across the gates, while this script
    watches for each gate's packet and decides it."""
    started = time.monotonic()
    proc = start(["run", *spec_args, "--wait"], state, log)
    gates: list[dict[str, Any]] = []
    decided: set[Path] = set()
    stopped, rc = False, None
    while rc is None:
        if clock.left() <= 0:
            stopped, rc = True, stop(proc)
            break
        packets = set((state / RUN_ID / "gates").glob("*/packet.json")) - decided
        if packets:
            status = json.loads(cli("status", RUN_ID, "--json", state=state).stdout)
            if status["status"] == "awaiting_decision":
                decided |= packets
                gates.append(decide_gate(state))
                print(f"gate {gates[-1]['gate']}: proceed ({len(gates[-1]['failing_checks'])} checks "
                      f"failing, {gates[-1]['script_s']} s)", flush=True)
        try:
            rc = proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            rc = None
    step = {"command": "runner run " + " ".join(spec_args) + " --wait", "rc": rc,
            "wall_s": round(time.monotonic() - started, 2), "stopped_at_limit": stopped, "ended": utc_now()}
    return [step], gates


def decide_gate(state: Path) -> dict[str, Any]:
    """The script reviewer: read the pending gate's packet, record PROCEED, say why."""
    started = time.monotonic()
    status = json.loads(cli("status", RUN_ID, "--json", state=state).stdout)
    gate = status["pending_gate"]
    packet = json.loads(cli("gate", RUN_ID, "--json", state=state).stdout)
    failing = [c["expr"] for c in packet["checks"] if not c["passed"]]
    reason = ("benchmark on a random-initialised model: proceed to measure the whole flow; "
              + (f"checks failing on noise: {'; '.join(failing)}" if failing else "all checks pass"))
    extra = ["--override-checks"] if failing else []
    done = cli("decide", RUN_ID, "--gate", gate, "--decision", "proceed", "--reviewer", "script",
               "--reason", reason, "--packet", packet["packet_sha256"], *extra, state=state)
    if done.returncode != 0:
        raise SystemExit(f"runner decide at gate {gate} exited {done.returncode}: {done.stderr.strip()}")
    return {"gate": gate, "iteration": packet["iteration"], "failing_checks": failing,
            "override_checks": bool(failing), "script_s": round(time.monotonic() - started, 2)}


def records_written(run_dir: Path) -> int:
    """Records of the run: lines of every phase instance's records.jsonl, each record once (a
    sharded phase's joined file; its shards' copies are not counted again)."""
    total = 0
    for path in (run_dir / "phases").glob("*/records.jsonl"):
        with open(path, "rb") as fh:
            total += sum(1 for line in fh if line.strip())
    return total


def log_events(run_dir: Path, name: str) -> list[dict[str, Any]]:
    path = run_dir / "log.jsonl"
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if f'"{name}"' in line:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                found.append(event)
    return found


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"1x {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores, {platform.node()})"


def in_flight(st: dict[str, Any], ended: str) -> list[dict[str, Any]]:
    """The phases a stopped run left running: how long each had run when the process ended,
    and for a sharded one how many shards were done."""
    found = []
    stop_at = dt.datetime.fromisoformat(ended.replace("Z", "+00:00"))
    for p in st.get("phases", []):
        if p["status"] != "running":
            continue
        began = dt.datetime.fromisoformat(str(p["started_at"]).replace("Z", "+00:00")) if p.get("started_at") else None
        shards = Path(p["output_dir"]) / "shards"
        found.append({"name": p["name"], "ran_s": round((stop_at - began).total_seconds(), 2) if began else None,
                      "shards_done": len(list(shards.glob("*/done.json"))) if shards.is_dir() else None})
    return found


def report(st: dict[str, Any], steps: list[dict[str, Any]], gates: list[dict[str, Any]],
           run_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the run as one JSON-ready dict."""
    phases = [{"name": p["name"], "iteration": p["iteration"], "status": p["status"],
               "wall_s": round(p["wall_s"], 2), "used_cuda": p["used_cuda"], "metrics": p["metrics"]}
              for p in st.get("phases", [])]
    by_name = {p["name"]: p for p in phases}
    runner_s = sum(s["wall_s"] for s in steps)
    files = sum(1 for p in run_dir.rglob("*") if p.is_file()) if run_dir.exists() else 0
    records = records_written(run_dir) if run_dir.exists() else 0
    rate = meta["gpu_hour_usd"]
    sft = by_name.get("sft", {}).get("metrics", {})
    ev = by_name.get("evaluate", {}).get("metrics", {})
    shard_s: dict[str, list[float]] = {}
    for e in log_events(run_dir, "shard_done"):
        shard_s.setdefault(e.get("phase", "?"), []).append(e.get("duration_s"))
    return {
        **meta,
        "status": st.get("status"), "completed": st.get("status") == "completed",
        "in_flight": in_flight(st, steps[-1]["ended"]),
        "stopped_at_limit": any(s["stopped_at_limit"] for s in steps),
        "runner_processes": steps, "gates": gates,
        "runner_wall_s": round(runner_s, 2),
        "gate_script_s": round(sum(g["script_s"] for g in gates), 2),
        # --wait: the one runner process idles while the script decides; without, the gates
        # fall between processes.
        "runner_wall_excl_gates_s": round(runner_s - (sum(g["script_s"] for g in gates) if meta["wait"] else 0), 2),
        "phase_wall_sum_s": round(sum(p["wall_s"] for p in phases), 2),
        "gpu_hours": round(runner_s / 3600, 5),
        "cost_usd": round(runner_s / 3600 * rate, 4),
        "runner_gpu_seconds": st.get("gpu_seconds"), "runner_cost_usd": st.get("cost_usd"),
        "phases": phases,
        "shard_seconds": shard_s,
        "model_loads_s": [e.get("seconds") for e in log_events(run_dir, "model_loaded")],
        "files": files, "records": records,
        "files_per_100_records": round(100 * files / records, 3) if records else None,
        "examples_exported": by_name.get("export", {}).get("metrics", {}).get("rows"),
        "sft": {k: sft.get(k) for k in ("steps", "tokens_per_s", "peak_memory_gb", "final_loss",
                                        "train_tokens", "examples")},
        "evaluate": ev,
    }


def model_words(r: dict[str, Any]) -> str:
    if r["tiny"]:
        return f"the tiny fixture model fixtures/tiny-base ({r['n_params'] / 1e6:.1f}M parameters, float32 on CPU)"
    return f"{r['n_params'] / 1e9:.2f}B random-initialised Llama, bf16"


def flight(p: dict[str, Any]) -> str:
    shards = "" if p["shards_done"] is None else f", {p['shards_done']}/8 shards done"
    return f"{p['name']} (ran {p['ran_s']} s{shards})"


def markdown(r: dict[str, Any]) -> str:
    """The report as Markdown: the RESULTS.md row, the per-phase table, the other figures."""
    ex = r["target_examples"]
    done = "completed" if r["completed"] else f"NOT completed: {r['status']}, in flight: {', '.join(flight(p) for p in r['in_flight']) or '-'}"
    scale_note = "" if ex == 15000 else f" (run at {ex:,} examples; the estimate is for 15,000)"
    sft, ev = r["sft"], r["evaluate"]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    ratio = (f"{6 / max(r['gpu_hours'], 1e-9):,.0f}-{8 / max(r['gpu_hours'], 1e-9):,.0f}x fewer GPU-hours"
             if ex == 15000 and r["completed"] else "- (not a completed 15,000-example run)")
    steps = "-" if sft.get("steps") is None else f"{sft['steps']:.0f}"
    lines = [
        f"## The 15k run: Stage-1 flow at {ex:,} examples on {r['device']} ({r['date']})", "",
        f"Command: `{r['command']}`; spec `bench/gpu/stage1_15k.yaml` (8 shards, local executor; "
        f"{model_words(r)}; noise adapters, critic threshold 0; gates decided by the script). "
        f"Flow: {'one `runner run --wait` process' if r['wait'] else 'run, then resume after each gate'}; "
        f"RUNNER_DECODE_COMPILE={r['decode_compile']}. Run {done}. Price: budget.gpu_hour_usd = ${r['gpu_hour_usd']} (an assumed on-demand H200 list price).", "",
        "| figure | current | baseline | ratio | target | device | date | command |",
        "|---|---|---|---|---|---|---|---|",
        f"| the 15k run: whole Stage-1 flow, {ex:,} examples, 8 shards, {steps} SFT steps, evaluation (issue 15.5) "
        f"| {r['runner_wall_s']:.0f} s of runner processes ({r['gpu_hours']:.4f} GPU-hours, ${r['cost_usd']:.2f}); "
        f"+ {r['gate_script_s']:.0f} s of script at the gates; {done} "
        f"| the hand-run Stage-1 pilot's estimate: {HAND_RUN_ESTIMATE}{scale_note} "
        f"| {ratio} "
        f"| <= 600 s on one H200 | {r['device']} | {r['date']} | `{r['command']}` |",
        f"| files in the run folder after the 15k run (issue 15.6) | {r['files']:,} files for {r['records']:,} records "
        f"({fmt(r['files_per_100_records'], '.3f')} per 100 records) | - | - | <= 1 per 100 records "
        f"| {r['device']} | {r['date']} | `find STATE/{RUN_ID} -type f \\| wc -l` after the run above |", "",
        "Records = lines of every phase instance's records.jsonl (each record once: a sharded phase's "
        "joined file, not its shards' copies); files = every file under the run folder.", "",
        "| phase | status | wall s | CUDA | records / key figures |", "|---|---|---|---|---|",
    ]
    for p in r["phases"]:
        m = p["metrics"]
        keys = [k for k in ("generated", "scored", "count", "merged", "rows", "steps", "tokens",
                            "shards", "probe_auc") if k in m]
        lines.append(f"| {p['name']} | {p['status']} | {p['wall_s']:.1f} | {p['used_cuda']} | "
                     + ", ".join(f"{k} {m[k]:,.4g}" for k in keys) + " |")
    lines += [
        "", "| runner process | exit | wall s |", "|---|---|---|",
        *[f"| `{s['command'].split(' --set')[0]}` | {s['rc']}{' (stopped at the limit)' if s['stopped_at_limit'] else ''} "
          f"| {s['wall_s']:.1f} |" for s in r["runner_processes"]],
        "", f"- Runner processes, summed: {r['runner_wall_s']:.1f} s; phases' own walls summed: "
        f"{r['phase_wall_sum_s']:.1f} s (the rest: process start, imports, journal, gates); without the gate waits "
        f"{r['runner_wall_excl_gates_s']:.1f} s; the script at "
        f"the gates: {r['gate_script_s']:.1f} s ({', '.join(g['gate'] + ' ' + str(g['script_s']) + ' s' for g in r['gates'])}); "
        f"model build before the run (not counted): {r['build_s']:.1f} s; whole command {r['command_s']:.1f} s.",
        f"- GPU-hours = runner processes' wall x 1 GPU = {r['gpu_hours']:.4f}; cost at ${r['gpu_hour_usd']}/GPU-hour: "
        f"${r['cost_usd']:.3f}. The runner's own account (CUDA phases' wall): {r['runner_gpu_seconds']} GPU-s, "
        f"${r['runner_cost_usd']}.",
        f"- SFT: {steps} steps, {fmt(sft.get('tokens_per_s'), ',.0f')} tokens/s, peak memory "
        f"{fmt(sft.get('peak_memory_gb'), '.2f')} GB, final loss {fmt(sft.get('final_loss'), '.3f')}; examples exported: "
        f"{fmt(r['examples_exported'], ',.0f')}.",
        "- Evaluate: " + (", ".join(f"{k} {v:.4g}" for k, v in ev.items()) or "-") + ".",
        f"- Model loads (s, in order): {r['model_loads_s']}; gate decisions: "
        + "; ".join(f"{g['gate']}: proceed{' --override-checks (' + str(len(g['failing_checks'])) + ' failing)' if g['override_checks'] else ''}"
                    for g in r["gates"]) + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--examples", type=int, default=None, help="target_examples (default 15000; --tiny: 160)")
    parser.add_argument("--sft-steps", type=int, default=None, help="SFT steps (default 200; --tiny: 4)")
    parser.add_argument("--tiny", action="store_true", help="the tiny fixture model on CPU (smoke test)")
    parser.add_argument("--limit-s", type=float, default=560.0, help="hard wall-clock limit of the whole command")
    parser.add_argument("--wait", action="store_true",
                        help="one `runner run --wait` process across the gates (default: run, then resume after each gate)")
    parser.add_argument("--decode-compile", choices=["never", "auto", "always"], default="auto",
                        help="RUNNER_DECODE_COMPILE for the run (default auto, the runner's default)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="passed on to `runner run` after the script's own (e.g. instruction.oversample=1.5)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/runner-15k"), help="model and state dir (emptied)")
    args = parser.parse_args()
    clock = Clock(args.limit_s)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    state = args.work / "state"
    examples = args.examples or (160 if args.tiny else 15000)
    sft_steps = args.sft_steps or (4 if args.tiny else 200)
    t0 = time.monotonic()
    if args.tiny:
        model = ROOT / "fixtures" / "tiny-base"
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        n_params = float(sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model).parameters()))
    else:
        model = args.work / "llama-random"
        n_params = build_model(model, tiny=False)
    build_s = time.monotonic() - t0
    sets = [f"model_path={model}", f"target_examples={examples}", f"sft.steps={sft_steps}",
            *(TINY_SETS if args.tiny else []), *args.sets]
    set_args = [a for s in sets for a in ("--set", s)]
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    command = "python bench/gpu/run_15k.py" + (" --tiny" if args.tiny else "") + \
        (f" --examples {args.examples}" if args.examples else "") + \
        (f" --sft-steps {args.sft_steps}" if args.sft_steps else "") + (" --wait" if args.wait else "") + \
        (f" --decode-compile {args.decode_compile}" if args.decode_compile != "auto" else "") + \
        "".join(f" --set {s}" for s in args.sets) + " --out $OUT"
    log = args.out / "runner_output.log"
    log.write_text("")
    os.environ["RUNNER_DECODE_COMPILE"] = args.decode_compile  # the runner processes inherit it
    flow = flow_wait if args.wait else flow_resume
    steps, gates = flow([str(SPEC), "--run-id", RUN_ID, *set_args], state, clock, log)
    for s in steps:
        print(f"{s['command'].split(' --set')[0]}: exit {s['rc']}, {s['wall_s']} s", flush=True)
    done = cli("status", RUN_ID, "--json", state=state)
    st = json.loads(done.stdout) if done.returncode == 0 else {"status": "unreadable", "phases": []}
    meta = {"device": device_name(), "date": dt.date.today().isoformat(), "command": command,
            "target_examples": examples, "sft_steps_asked": sft_steps, "tiny": args.tiny,
            "n_params": n_params, "build_s": round(build_s, 2), "limit_s": args.limit_s,
            "gpu_hour_usd": spec["budget"]["gpu_hour_usd"], "sets": sets, "wait": args.wait,
            "decode_compile": args.decode_compile}
    result = report(st, steps, gates, state / RUN_ID, meta)
    result["command_s"] = round(time.monotonic() - clock.start, 2)
    text = markdown(result)
    (args.out / "15k.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "15k.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
