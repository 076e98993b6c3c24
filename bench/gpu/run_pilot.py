"""GPU pilot benchmark (issue 3, item 11): the pilot on a random-initialised ~1B Llama in bf16.

1. Builds the model (Llama-3.2-1B shape: hidden 2048, 16 layers, 32 heads, 8 KV heads,
   intermediate 8192, tied embeddings; the vocabulary of fixtures/tiny-base's tokenizer) and
   saves it with `save_pretrained`, so the run loads it through the real `from_pretrained` path.
2. Times `runner run bench/gpu/pilot_1b.yaml` end to end (a fresh process, model load
   included) and reads each phase's wall seconds from `runner status --json`.
3. Starts a second run, SIGKILLs it once generate_responses has committed a batch, resumes
   it, and checks that every batch index exists exactly once and that no record is lost.

Run (device): python bench/gpu/run_pilot.py --out $OUT      (--tiny: a small CPU smoke run)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "bench" / "gpu" / "pilot_1b.yaml"
TOKENIZER = ROOT / "fixtures" / "tiny-base"


def build_model(path: Path, tiny: bool) -> float:
    """Random-initialised Llama saved with save_pretrained; returns its parameter count."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    dims = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128) if tiny else dict(
        hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=8192)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **dims)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() and not tiny else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    n = sum(p.numel() for p in model.parameters())
    del model
    return float(n)


def fresh_bench(work: Path, tiny: bool) -> tuple[Path, Path, dict[str, str]]:
    """An emptied `work` folder with the random model built in it: (model, state folder, env
    for `runner`; --tiny runs the refill engine eagerly on the CPU, as on CUDA)."""
    shutil.rmtree(work, ignore_errors=True)
    model, state = work / "llama-random", work / "state"
    build_model(model, tiny)
    env = dict(os.environ)
    if tiny:
        env["RUNNER_GENERATION"] = "static"
    return model, state, env


def runner(*args: str, state: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, env=env, cwd=ROOT)


def status(run_id: str, state: Path) -> dict:
    return json.loads(runner("status", run_id, "--json", state=state).stdout)


def kill_and_resume(model: Path, state: Path, tiny: bool) -> dict:
    """SIGKILL a run after generate_responses committed a batch; resume; check batches."""
    sets = ["--set", f"model_path={model}"] + (["--set", "batch_size=8"] if tiny else [])
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(SPEC), "--run-id", "killed",
                             "--state-dir", str(state), *sets], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    batches = state / "killed" / "phases" / "generate_responses.i1" / "batches"
    deadline = time.time() + 500
    while time.time() < deadline and proc.poll() is None:
        if batches.is_dir() and any(p.suffix == ".jsonl" for p in batches.iterdir()):
            break
        time.sleep(0.05)
    committed_before = sorted(p.name for p in batches.glob("*.jsonl")) if batches.is_dir() else []
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.perf_counter()
    resumed = runner("resume", "killed", state=state)
    resume_s = time.perf_counter() - t0
    after = sorted(p.name for p in batches.glob("*.jsonl"))
    indexes = [int(n.split(".")[0]) for n in after]
    records = (state / "killed" / "phases" / "generate_responses.i1" / "records.jsonl").read_text().splitlines()
    ids = [json.loads(r)["id"] for r in records]
    st = status("killed", state)
    return {
        "killed_with_batches": committed_before, "resume_exit": resumed.returncode,
        "resume_s": round(resume_s, 1), "batches_after": after,
        "batch_indexes_contiguous": indexes == list(range(len(indexes))),
        "records": len(ids), "unique_record_ids": len(set(ids)), "status": st["status"],
        "log_tail": resumed.stderr.strip().splitlines()[-3:],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--tiny", action="store_true", help="a small random model on CPU (smoke test)")
    parser.add_argument("--append-results", action="store_true", help="also append to bench/HISTORY.md (the log of runs)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/runner-gpu-bench")
    shutil.rmtree(work, ignore_errors=True)
    model, state = work / "llama-random", work / "state"
    t0 = time.perf_counter()
    n_params = build_model(model, args.tiny)
    build_s = time.perf_counter() - t0
    sets = ["--set", f"model_path={model}"] + (["--set", "batch_size=8"] if args.tiny else [])
    t0 = time.perf_counter()
    run = runner("run", str(SPEC), "--run-id", "pilot", *sets, state=state)
    total_s = time.perf_counter() - t0
    (args.out / "pilot_stderr.log").write_text(run.stderr)
    st = status("pilot", state)
    load_s = [json.loads(line).get("seconds") for line in (state / "pilot" / "log.jsonl").read_text().splitlines()
              if '"model_loaded"' in line]
    crash = kill_and_resume(model, state, args.tiny)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    rows = [(p["name"], p["status"], p["wall_s"], p["used_cuda"], next((p["metrics"][k] for k in ("generated", "scored", "count") if k in p["metrics"]), None))
            for p in st["phases"]]
    lines = [f"\n## Stage-1 pilot on a random-initialised Llama ({n_params / 1e9:.2f}B params, bf16) "
             f"({dt.date.today().isoformat()}, {device})\n",
             "Command: `python bench/gpu/run_pilot.py --out $OUT` (device tool); spec `bench/gpu/pilot_1b.yaml`.\n",
             f"`runner run` exit {run.returncode} (3 = at the gate); end to end {total_s:.1f} s in one fresh process, "
             f"model load {', '.join(f'{s:.1f} s' for s in load_s if s is not None)} of it "
             f"(model build, not part of the run: {build_s:.1f} s).\n",
             "| phase | status | wall s | CUDA | records out (generated/scored/count) |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {s} | {w:.2f} | {c} | {k} |" for n, s, w, c, k in rows]
    lines += ["", "Kill and resume: " + json.dumps(crash)]
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    if args.append_results:
        with open(ROOT / "bench" / "HISTORY.md", "a", encoding="utf-8") as fh:
            fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
