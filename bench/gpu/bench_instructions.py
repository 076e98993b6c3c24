"""Instruction generation at 4,000 examples (issue 15, item 2): tokens/s, kernel builds excluded.

Builds the pilot's random-initialised 1B Llama (`run_pilot.build_model`), then in fresh
processes runs `generate_instructions` with the pilot's `with:` (`instructions_1b.yaml`):

1. a small warm-up run (64 examples), which builds the Triton kernels into this machine's
   cache, as any earlier process on a machine would;
2. 4,000 examples (8,000 generations of at most 48 tokens), `batch_size: 256`, few-shot
   examples drawn per row (`fewshot_draw: row`, the default);
3. the same with `fewshot_draw: batch` (one draw per batch: its rows share one prompt, which
   the engine prefills once).

Tokens/s = generated tokens (EOS excluded) / the phase's wall seconds, and again over the
wall seconds less the model load; the phase runs in the refill engine with 256 slots.
Run (device): python bench/gpu/bench_instructions.py --out $OUT     (--tiny: CPU smoke)
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from run_pilot import ROOT, build_model, runner, status

SPEC = ROOT / "bench" / "gpu" / "instructions_1b.yaml"


def measure(run_id: str, sets: list[str], state: Path) -> dict[str, float]:
    done = runner("run", str(SPEC), "--run-id", run_id, *sets, state=state)
    if done.returncode != 0:
        raise SystemExit(f"{run_id}: exit {done.returncode}\n{done.stderr[-3000:]}")
    phase = status(run_id, state)["phases"][0]
    folder = state / run_id / "phases" / "generate_instructions.i1"
    records = [json.loads(x) for x in (folder / "records.jsonl").read_text().splitlines()]
    log = [json.loads(x) for x in (state / run_id / "log.jsonl").read_text().splitlines()]
    load = sum(e.get("seconds", 0.0) for e in log if e.get("event") == "model_loaded")
    capture = sum(e.get("seconds", 0.0) for e in log if e.get("event") == "fastgen_captured")
    tokens = sum(r["tokens"] for r in records)
    wall = phase["wall_s"]
    return {"generations": len(records), "tokens": tokens, "wall_s": wall, "model_load_s": load,
            "capture_s": capture, "tok_s": tokens / wall, "tok_s_without_load": tokens / (wall - load),
            "distinct_prompts": len({r["prompt_sha256"] for r in records}),
            "mean_tokens": tokens / len(records)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/runner-instr-bench")
    shutil.rmtree(work, ignore_errors=True)
    model, state = work / "llama-random", work / "state"
    build_model(model, args.tiny)
    base = ["--set", f"model_path={model}"]
    n, b = ("40", "8") if args.tiny else ("4000", "256")
    runs = {
        "warm-up (64 examples)": base + ["--set", "examples=64", "--set", "batch_size=64"],
        "fewshot_draw: row": base + ["--set", f"examples={n}", "--set", f"batch_size={b}"],
        "fewshot_draw: batch": base + ["--set", f"examples={n}", "--set", f"batch_size={b}",
                                       "--set", "instruction.fewshot_draw=batch"],
    }
    results = {name: measure(f"r{i}", sets, state) for i, (name, sets) in enumerate(runs.items())}
    (args.out / "bench_instructions.json").write_text(json.dumps(results, indent=1))
    print("| run | generations | tokens | wall s | load s | capture s | tok/s | tok/s w/o load | prompts |")
    for name, r in results.items():
        print(f"| {name} | {r['generations']} | {r['tokens']} | {r['wall_s']:.2f} | "
              f"{r['model_load_s']:.2f} | {r['capture_s']:.2f} | {r['tok_s']:,.0f} | "
              f"{r['tok_s_without_load']:,.0f} | {r['distinct_prompts']} |")


if __name__ == "__main__":
    main()
