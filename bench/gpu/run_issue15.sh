#!/usr/bin/env bash
# Issue 15's device measurements in one call (one H200): refill on the length mix, instruction
# generation at 4,000 examples, the first call (cold and warm kernel cache), and the gpu test
# tier of the decoding package. Writes its logs and JSON under $OUT; figures go to
# bench/RESULTS_issue15.md.   Run (device, repository root): bash bench/gpu/run_issue15.sh
set -uo pipefail
out=${OUT:-bench-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
quiet() { grep -v -E '^\s*$|\[(info|debug|warning) *\]|"event"'; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u
  python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$out/env.txt"
echo "== refill on the length mix"
(cd bench && timeout ${REFILL_S:-220} python bench_refill.py --out "$out" 2>&1) | quiet \
  | tee "$out/refill.log" | tail -40
echo "== instruction generation at 4,000 examples"
timeout ${INSTR_S:-140} python bench/gpu/bench_instructions.py --out "$out" 2>&1 | quiet \
  | tail -6 | tee "$out/instructions.log"
echo "== first call (fresh processes: cold kernel cache, then warm; each way of building kernels)"
OUT="$out" bash bench/gpu/first_call.sh 2>&1 | tee "$out/first_call.log"
echo "== gpu tests (decoding)"
timeout ${TESTS_S:-100} python -m pytest -q -m gpu tests/llm/decoding -p no:cacheprovider 2>&1 \
  | tail -12 | tee "$out/gpu_tests.log"
