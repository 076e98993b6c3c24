"""Both generation phases at 4,000 examples (issue 15, item 2): tokens/s, kernel builds excluded.

Builds the pilot's random-initialised 1B Llama (`run_pilot.build_model`), then in fresh
`runner run` processes, one after another:

1. a warm-up run of `responses_1b.yaml` at 256 examples, which builds the Triton kernels of
   both phases into this machine's cache, as any earlier process on a machine would;
2. `generate_instructions` alone (`instructions_1b.yaml`), 4,000 examples (8,000 generations
   of at most 48 tokens), `batch_size: 256`, examples drawn per row (`fewshot_draw: row`,
   the default; the figure main was measured on);
3. `responses_1b.yaml` at 4,000 examples: `generate_instructions` with `fewshot_draw: batch`,
   the random model's instructions passed on as kept, then `generate_responses` (4,000 rows
   of at most 128 tokens, `fewshot_draw: batch`), 256 slots;
4. the same with 512 slots (`--slots` lists the counts of runs 3 and 4);

runs 3 and 4 each with refill rounds as shipped (adapted to the mix) and/or with every round
fixed at 8 steps (the engine before commit 5a40edd) (`--rounds`), and with the prefill's
attention kernel as shipped (memory-efficient) and/or PyTorch's pick, cuDNN (`--prefill`).

Tokens/s = generated tokens (EOS excluded) / the phase's wall seconds, and again over the
wall seconds less the model load. Each phase's `refill_timing` log line says where its
refill loop's time went: `device` is the time the host waited for the GPU, every other part
is host work the GPU did not hide (`caller`: the phase's own work on finished batches, which
overlaps a round already queued). `--tiny` runs a small model on the CPU through the same
refill engine (RUNNER_GENERATION=static), to show the script works end to end.

Run (device): python bench/gpu/bench_instructions.py --out $OUT     (--tiny: CPU smoke)
Writes bench_instructions.json and bench_instructions.md under --out; prints the table last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from run_pilot import ROOT, fresh_bench, runner, status

INSTRUCTIONS = ROOT / "bench" / "gpu" / "instructions_1b.yaml"
RESPONSES = ROOT / "bench" / "gpu" / "responses_1b.yaml"
GENERATION = ("generate_instructions", "generate_responses")
TIMING = ("pull", "admit", "launch", "device", "take", "caller")


# `runner run` with module settings changed, for an A/B in fresh processes of one call:
# "fixed" rounds (every refill round `refill.BLOCK` steps: the engine before its rounds adapted
# to the mix, commit 5a40edd) and the "auto" prefill kernel (`static_kv.PREFILL_KERNEL`:
# PyTorch's pick, cuDNN, as shipped before the memory-efficient kernel).
PATCHES = {
    "fixed": "refill.LONGEST_BLOCK = refill.BLOCK",
    "auto": 'static_kv.PREFILL_KERNEL = "auto"',
}
PATCHED = """
import sys
from runner.llm.decoding import refill, static_kv
{patches}
from runner.cli.main import main
sys.argv = ["runner"] + sys.argv[1:]
main()
"""


def measure(run_id: str, spec: Path, sets: list[str], state: Path, env: dict[str, str],
            patches: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Per generation phase of one fresh run: tokens, wall, load, tok/s, the loop's timing."""
    started = time.monotonic()
    if patches:
        code = PATCHED.format(patches="\n".join(PATCHES[p] for p in patches))
        done = subprocess.run([sys.executable, "-c", code, "run", str(spec), "--run-id",
                               run_id, *sets, "--state-dir", str(state)],
                              capture_output=True, text=True, env=env, cwd=ROOT)
    else:
        done = runner("run", str(spec), "--run-id", run_id, *sets, state=state, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{run_id}: exit {done.returncode}\n{done.stderr[-3000:]}")
    process_s = time.monotonic() - started
    log = [json.loads(x) for x in (state / run_id / "log.jsonl").read_text().splitlines()]
    out: dict[str, dict[str, Any]] = {}
    for phase in status(run_id, state)["phases"]:
        name = phase["name"]
        if name not in GENERATION:
            continue
        folder = state / run_id / "phases" / f"{name}.i1"
        records = [json.loads(x) for x in (folder / "records.jsonl").read_text().splitlines()]
        mine = [e for e in log if e.get("phase") == name]
        load = sum(e.get("seconds", 0.0) for e in log if e.get("event") == "model_loaded"
                   and name == "generate_instructions")  # the first phase loads the model
        capture = sum(e.get("seconds", 0.0) for e in mine if e.get("event") == "fastgen_captured")
        timing = next((e for e in mine if e.get("event") == "refill_timing"), {})
        tokens = sum(r["tokens"] for r in records)
        wall = phase["wall_s"]
        out[name] = {
            "generations": len(records), "tokens": tokens, "wall_s": wall, "model_load_s": load,
            "capture_s": capture, "tok_s": tokens / wall, "tok_s_without_load": tokens / (wall - load),
            "distinct_prompts": len({r["prompt_sha256"] for r in records}),
            "mean_tokens": tokens / max(1, len(records)), "process_s": process_s,
            "refill": {k: v for k, v in timing.items()
                       if k.endswith("_s") or k in ("rounds", "steps", "prefilled_rows", "slots",
                                                 "prefix_tokens_saved")},
        }
    return out


def markdown(results: dict[str, dict[str, dict[str, Any]]], device: str) -> str:
    lines = [f"Device: {device}. Tokens/s = generated tokens / phase wall seconds.", "",
             "| run | phase | generations | tokens | wall s | load s | tok/s | tok/s w/o load "
             "| prompts | prefilled | prefix tokens spared | rounds | steps | " + " | ".join(f"{k} s" for k in TIMING) + " |",
             "|" + "---|" * (13 + len(TIMING))]
    for run, phases in results.items():
        for name, r in phases.items():
            t = r["refill"]
            lines.append(
                f"| {run} | {name} | {r['generations']} | {r['tokens']} | {r['wall_s']:.2f} | "
                f"{r['model_load_s']:.2f} | {r['tok_s']:,.0f} | {r['tok_s_without_load']:,.0f} | "
                f"{r['distinct_prompts']} | {t.get('prefilled_rows', '')} | {t.get('prefix_tokens_saved', '')} | "
                f"{t.get('rounds', '')} | {t.get('steps', '')} | "
                + " | ".join(f"{t.get(f'{k}_s', 0.0):.2f}" for k in TIMING) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--tiny", action="store_true", help="a small model on the CPU (smoke run)")
    ap.add_argument("--examples", type=int, help="default 4000 (--tiny: 200)")
    ap.add_argument("--slots", default="256,512", help="slot counts of the batch-draw runs")
    ap.add_argument("--skip-row", action="store_true", help="leave out the fewshot_draw: row run")
    ap.add_argument("--rounds", default="adaptive,fixed",
                    help="refill rounds of the batch-draw runs: adaptive (as shipped) and/or "
                         "fixed (every round 8 steps, the engine before)")
    ap.add_argument("--prefill", default="efficient",
                    help="prefill attention kernels of the batch-draw runs: efficient (as "
                         "shipped) and/or auto (PyTorch's pick: cuDNN; static_kv.PREFILL_KERNEL)")
    args = ap.parse_args()
    wrong = set(args.rounds.split(",")) - {"adaptive", "fixed"}
    if wrong:
        ap.error(f"--rounds: {', '.join(sorted(wrong))} is not adaptive or fixed")
    wrong = set(args.prefill.split(",")) - {"auto", "efficient"}
    if wrong:
        ap.error(f"--prefill: {', '.join(sorted(wrong))} is not auto or efficient")
    args.out.mkdir(parents=True, exist_ok=True)
    model, state, env = fresh_bench(Path("/tmp/runner-instr-bench"), args.tiny)
    n = str(args.examples or (200 if args.tiny else 4000))
    slot_counts = [int(x) for x in args.slots.split(",") if x.strip()]
    base = ["--set", f"model_path={model}", "--set", "batch_size=256"]
    # The warm-up's first batches have the timed runs' prompt widths (and so the attention
    # kernel's cache length) as nearly as a short run can: batches of 256, as there.
    warm = "16" if args.tiny else "256"
    runs: dict[str, tuple[Path, list[str]]] = {
        f"warm-up ({warm} examples)": (RESPONSES, [*base, "--set", f"examples={warm}",
                                                   "--set", "slots=256"]),
    }
    if not args.skip_row:
        runs["instructions, fewshot_draw row, 256 slots"] = (
            INSTRUCTIONS, [*base, "--set", f"examples={n}"])
    patched: dict[str, tuple[str, ...]] = {}
    for slots in slot_counts:
        for rounds in args.rounds.split(","):
            for prefill in args.prefill.split(","):
                name = f"fewshot_draw batch, {slots} slots, {rounds} rounds, {prefill} prefill"
                runs[name] = (RESPONSES, [*base, "--set", f"examples={n}",
                                          "--set", f"slots={slots}"])
                patched[name] = tuple(x for x in (rounds, prefill) if x in PATCHES)
    results = {name: measure(f"r{i}", spec, sets, state, env, patched.get(name, ()))
               for i, (name, (spec, sets)) in enumerate(runs.items())}
    device = "CPU (--tiny)" if args.tiny else _device()
    (args.out / "bench_instructions.json").write_text(
        json.dumps({"device": device, "runs": results}, indent=1))
    table = markdown(results, device)
    (args.out / "bench_instructions.md").write_text(table)
    print(table)


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    main()
