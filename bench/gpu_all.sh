#!/usr/bin/env bash
# Issue 5's one benchmark command, for the GPU machine (device tool), in one call:
#   (a) generation: our CUDA-graph engine vs model.generate at batch 1, 64, 256
#   (b) critic on a 20-400-token length mix: tokens/s, TFLOP/s, padding waste
#   (c) SFT: the phase's loop vs a plain transformers + peft + bitsandbytes loop
#   (d) the end-to-end pilot (100 instructions -> filter -> responses -> filter -> QC), model load included
# Each appends its table to bench/HISTORY.md (the log of runs) with the device, date and
# command; copy that file (or the part after the line count printed first) back from the
# machine, and put the new figures into bench/RESULTS.md's table of current figures.
# Device call: carry .device-wheels (pydantic, structlog, tenacity, ...) and .device-wheels-bnb;
# add .device-wheels-mpl only where the machine lacks matplotlib (the H100 image has 3.11.2).
set -uo pipefail
cd "$(dirname "$0")/.."
for d in .device-wheels .device-wheels-bnb .device-wheels-mpl; do
  [ -d "$d" ] && python -m pip install --no-index --no-deps -q "$d"/*.whl 2>&1 | grep -v WARNING
done
export PYTHONUNBUFFERED=1
out=${OUT:-bench-out}; mkdir -p "$out"
echo "bench/HISTORY.md had $(wc -l < bench/HISTORY.md) lines"
# RUNNER_BENCH_SKIP: space-separated parts to leave out (gen critic sft pilot), e.g. to fit
# the device tool's 10-minute limit a call in two calls.
skip=" ${RUNNER_BENCH_SKIP:-} "
[[ $skip == *" gen "* ]] || { timeout 330 python bench/bench_generation.py --append-results > "$out/gen.log" 2>&1; grep -v "^20" "$out/gen.log" | tail -12; }
[[ $skip == *" critic "* ]] || { timeout 240 python bench/bench_critic.py --append-results > "$out/critic.log" 2>&1; tail -9 "$out/critic.log"; }
[[ $skip == *" sft "* ]] || { timeout 200 python bench/bench_sft.py --append-results --loops plain,ours > "$out/sft.log" 2>&1; tail -4 "$out/sft.log"; }
[[ $skip == *" pilot "* ]] || { timeout 200 python bench/gpu/run_pilot.py --out "$out" --append-results > "$out/pilot.log" 2>&1; tail -12 "$out/pilot.log"; }
cp bench/HISTORY.md "$out/HISTORY.md"
