"""Where a generation phase's wall time goes outside its decode loop (issue 15, item 2).

`bench_instructions.py` showed `generate_instructions` at 4,000 examples spending ~6.6 s of
its 15.2 s wall outside both the model load and the refill loop, and the same ~6.6 s in a
256-example run: a fixed cost per phase. This script finds it. It builds the pilot's random
1B Llama, warms the Triton cache with one short run, then, each run a fresh process:

1. `instructions_1b.yaml` at `--examples` (batch draws, 256 slots): the run's log as a
   timeline, seconds since the phase started, with the refill loop's own split;
2. the same under cProfile (`runner.cli.main` in-process), the top functions by cumulative
   time written to `profile_instructions.txt` (the profiler inflates Python-heavy parts; use
   it to find fixed costs, the timeline for their size);
3. `responses_1b.yaml` with `response.fewshot_draw=row` at `--examples`: its timeline.

Run (device): python bench/gpu/profile_phase.py --out $OUT      (--tiny: CPU smoke run)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from run_pilot import ROOT, fresh_bench, runner

INSTRUCTIONS = ROOT / "bench" / "gpu" / "instructions_1b.yaml"
RESPONSES = ROOT / "bench" / "gpu" / "responses_1b.yaml"
PROFILED = """
import cProfile, pstats, sys
from runner.cli.main import main
out, sys.argv = sys.argv[1], ["runner"] + sys.argv[2:]
profile = cProfile.Profile()
profile.enable()
try:
    main()
except SystemExit:
    pass
finally:
    profile.disable()
    stats = pstats.Stats(profile, stream=open(out, "w"))
    stats.sort_stats("cumulative").print_stats(90)
    stats.sort_stats("tottime").print_stats(40)
"""


def timeline(log_path: Path) -> list[dict[str, Any]]:
    """The run's log lines as (seconds since the first phase started, event, key figures)."""
    from datetime import datetime

    events = [json.loads(x) for x in log_path.read_text().splitlines()]
    start = next(e for e in events if e["event"] == "phase_started")["timestamp"]
    t0 = datetime.fromisoformat(start.replace("Z", "+00:00"))
    rows = []
    for e in events:
        t = (datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) - t0).total_seconds()
        keep = {k: v for k, v in e.items()
                if k.endswith("_s") or k in ("seconds", "duration_s", "phase", "steps", "rounds")}
        rows.append({"t": round(t, 3), "event": e["event"], **keep})
    return rows


def run_plain(name: str, spec: Path, sets: list[str], state: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    done = runner("run", str(spec), "--run-id", name, *sets, state=state, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return timeline(state / name / "log.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--tiny", action="store_true", help="a small model on the CPU (smoke run)")
    ap.add_argument("--examples", type=int, help="default 4000 (--tiny: 100)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, state, env = fresh_bench(Path("/tmp/runner-profile-phase"), args.tiny)
    n = str(args.examples or (100 if args.tiny else 4000))
    base = ["--set", f"model_path={model}", "--set", "batch_size=256"]
    instr = [*base, "--set", f"examples={n}", "--set", "instruction.fewshot_draw=batch"]
    base = [*base, "--set", "slots=256"]  # responses_1b.yaml only; instructions: slots = batch
    out: dict[str, Any] = {}
    out["warm-up"] = run_plain("warm", RESPONSES, [*base, "--set", "examples=256"], state, env)
    out["instructions"] = run_plain("instr", INSTRUCTIONS, instr, state, env)
    profiled = subprocess.run(
        [sys.executable, "-c", PROFILED, str(args.out / "profile_instructions.txt"), "run",
         str(INSTRUCTIONS), "--run-id", "instr-prof", *instr, "--state-dir", str(state)],
        capture_output=True, text=True, env=env, cwd=ROOT)
    out["instructions under cProfile"] = timeline(state / "instr-prof" / "log.jsonl") \
        if profiled.returncode == 0 else profiled.stderr[-2000:]
    out["responses, row draws"] = run_plain(
        "resp", RESPONSES, [*base, "--set", f"examples={n}", "--set", "response.fewshot_draw=row"],
        state, env)
    (args.out / "profile_phase.json").write_text(json.dumps(out, indent=1))
    for name, rows in out.items():
        print(f"## {name}")
        for row in rows if isinstance(rows, list) else [rows]:
            print(row)


if __name__ == "__main__":
    main()
