"""Where a phase's model load goes (issue 15, item 2): each part timed in a fresh process.

`generate_instructions` at 4,000 examples spends ~6 s importing and ~3 s in `load_model` of
its ~12-16 s (bench/RESULTS_issue15.md 2e). This splits the load of the pilot's random 1B
Llama (bf16, CUDA) into its parts, each run in a fresh process, `--repeats` times:

* `whole`: `runner.llm.loading.load_model` as the phases call it (the weights hashed on a
  thread meanwhile), after `import transformers` (timed apart);
* `parts`: the same steps one after the other: tokenizer, `from_pretrained` on the host,
  `.to(device)`, the sentinel completion, and the weights' sha256 alone (one thread);
* `device_map`: `from_pretrained(..., device_map=device)`, the weights read straight onto
  the device, then the sentinel.

Run (device): python bench/gpu/probe_load.py --out $OUT       CPU smoke: --tiny
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from run_pilot import ROOT, fresh_bench

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
from runner.llm.loading import loader
out = {"variant": sys.argv[2], "import_s": time.perf_counter() - t0}
path, variant = sys.argv[1], sys.argv[2]
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()

def timed(name, fn):
    sync()
    t = time.perf_counter()
    value = fn()
    sync()
    out[name] = time.perf_counter() - t
    return value

if variant == "whole":
    spec = {"path": path, "dtype": "auto", "device": "auto"}
    timed("load_model_s", lambda: loader.load_model(spec))
else:
    folder = loader._model_dir({"path": path}, "probe")
    tok = timed("tokenizer_s", lambda: loader.load_tokenizer({"path": path}))
    if variant == "parts":
        model = timed("from_pretrained_s", lambda: AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, local_files_only=True))
        timed("to_device_s", lambda: model.to(device).eval())
    else:
        model = timed("from_pretrained_device_map_s", lambda: AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, local_files_only=True, device_map=str(device)).eval())
    timed("sentinel_s", lambda: loader._sentinel(model, tok, device))
    if variant == "parts":
        weights = sorted(folder.glob("*.safetensors"))
        timed("sha256_weights_s", lambda: loader._sha256_files(weights))
        out["weights_GB"] = sum(w.stat().st_size for w in weights) / 1e9
out["process_s"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--tiny", action="store_true", help="a small model on the CPU (smoke run)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, _, env = fresh_bench(Path("/tmp/runner-probe-load"), args.tiny)
    rows = []
    for rep in range(args.repeats + 1):  # the first round warms caches (page, bytecode)
        for variant in ("whole", "parts", "device_map"):
            done = subprocess.run([sys.executable, "-c", PROBE, str(model), variant],
                                  capture_output=True, text=True, env=env, cwd=ROOT)
            line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            row = json.loads(line) if line.startswith("{") else {
                "variant": variant, "error": done.stderr[-800:]}
            row["repeat"] = rep
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()},
                  flush=True)
    (args.out / "probe_load.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
