#!/usr/bin/env bash
# Issue 15 item 4 on the device (one H200): our SFT loop against TRL's SFTTrainer, one part per
# call so that each finishes in under 5 minutes. Carry .device-wheels (trl, datasets, dill,
# multiprocess, bitsandbytes, ...); logs, results.json/.md and profile-*.md land under $OUT.
#   bash bench/gpu/run_sft_issue15.sh grid      TRL and our loop, each speed knob added in turn
#   bash bench/gpu/run_sft_issue15.sh profile   2 profiled steps of TRL, ours, ours with the knobs;
#                                                then the gpu tests of the knobs
#   bash bench/gpu/run_sft_issue15.sh compile   TRL and our loop with compiled layers / parts
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-bench-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# The wheels only where there is a GPU (never into a CPU box's shared environment).
if command -v nvidia-smi > /dev/null && [ -d .device-wheels ]; then
  python -m pip install --no-index --no-deps -q .device-wheels/*.whl 2>&1 | grep -v WARNING
fi
extra=${SFT_BENCH_ARGS:-}  # e.g. --tiny: the same calls on a CPU, in seconds
show() { grep -E '^(\||ours|trl|Target|warning|Traceback|[A-Za-z]*Error)' | cut -c1-400; }
all="lean=1:bf16=1:tiled=1:bestfit=1:remat=1"
case "${1:-grid}" in
  grid)
    timeout ${GRID_S:-285} python bench/bench_sft.py --out "$out" $extra --loops \
ours,ours:lean=1,ours:lean=1:bf16=1,ours:lean=1:bf16=1:tiled=1,\
ours:lean=1:bf16=1:tiled=1:bestfit=1,ours:$all,ours:$all:gc=0.75,trl,trl:lean=1 \
      > "$out/grid.log" 2>&1
    show < "$out/grid.log" ;;
  profile)
    timeout ${PROFILE_S:-170} python bench/bench_sft.py --out "$out" $extra --profile trl,ours,ours:$all \
      > "$out/profile.log" 2>&1
    for f in "$out"/profile-*.md; do head -13 "$f"; done
    timeout ${TESTS_S:-100} python -m pytest -q -m gpu tests/llm/sft/test_sft_gpu.py \
      -p no:cacheprovider 2>&1 | tail -8 | tee "$out/gpu_tests.log" ;;
  compile)
    timeout ${COMPILE_S:-285} python bench/bench_sft.py --out "$out" $extra --warmup 4 --loops \
trl,ours:$all:compile=1,ours:$all:compile=4,ours:$all:compile=2 > "$out/compile.log" 2>&1
    show < "$out/compile.log" ;;
  *) echo "usage: $0 grid|profile|compile" >&2; exit 2 ;;
esac
