"""GPU benchmark of issue 4, item 6: QLoRA SFT of a random-initialised ~1B Llama, then evaluate.

Builds the model as `run_pilot.py` does, runs `bench/gpu/sft_eval_1b.yaml` through the CLI
(`runner run`, one process), and reports the SFT phase's steps/s, tokens/s and peak GPU memory
and the evaluation phase's time and metrics. `--tiny` runs a small model on CPU (smoke test).

Run (device): python bench/gpu/run_sft_eval.py --out $OUT
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_pilot import ROOT, build_model

SPEC = ROOT / "bench" / "gpu" / "sft_eval_1b.yaml"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/runner-sft-bench")
    shutil.rmtree(work, ignore_errors=True)
    model, state = work / "llama-random", work / "state"
    n_params = build_model(model, args.tiny)
    sets = ["--set", f"model_path={model}"]
    if args.tiny:
        sets += ["--set", "sft.steps=6", "--set", "sft.batch_size=2", "--set", "sft.max_seq_len=128",
                 "--set", "eval.limit=8", "--set", "eval.batch_size=8", "--set", "pairs=200"]
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "runner", "run", str(SPEC), "--run-id", "sft", *sets,
                          "--state-dir", str(state)], capture_output=True, text=True, cwd=ROOT)
    total = time.perf_counter() - t0
    (args.out / "sft_eval_stderr.log").write_text(run.stderr)
    status = json.loads(subprocess.run([sys.executable, "-m", "runner", "status", "sft", "--json",
                                        "--state-dir", str(state)], capture_output=True, text=True,
                                       cwd=ROOT).stdout)
    phases = {p["name"]: p for p in status["phases"]}
    sft, ev = phases["sft"], phases["evaluate"]
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    steps = sft["metrics"].get("steps", 0)
    text = "\n".join([
        f"\n## QLoRA SFT + evaluation on a random-initialised Llama ({n_params / 1e9:.2f}B params) "
        f"({dt.date.today().isoformat()}, {device})\n",
        "Command: `python bench/gpu/run_sft_eval.py --out $OUT` (device tool); spec `bench/gpu/sft_eval_1b.yaml` "
        "(4-bit NF4, double quantisation, bf16 compute, LoRA r=16 on all linear layers, batch 16 x 512, packing, chunked loss).\n",
        f"`runner run` exit {run.returncode}, {total:.1f} s end to end (one process, model loads included).\n",
        "| phase | wall s | used CUDA | metrics |", "|---|---|---|---|",
        f"| sft | {sft['wall_s']:.1f} | {sft['used_cuda']} | steps {steps}, steps/s {steps / sft['wall_s']:.2f} (phase wall, load and checkpoints included), "
        f"tokens/s {sft['metrics'].get('tokens_per_s', 0):,.0f}, peak memory {sft['metrics'].get('peak_memory_gb', 0):.1f} GB, final loss {sft['metrics'].get('final_loss', 0):.3f} |",
        f"| evaluate | {ev['wall_s']:.1f} | {ev['used_cuda']} | {json.dumps(ev['metrics'])} |",
    ]) + "\n"
    (args.out / "sft_eval.md").write_text(text)
    print(text)
    print(run.stderr[-1500:] if run.returncode else "")


if __name__ == "__main__":
    main()
