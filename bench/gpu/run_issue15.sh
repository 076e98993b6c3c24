#!/usr/bin/env bash
# Issue 15's device measurements (one H200): refill on the length mix, both generation phases at
# 4,000 examples (256 and 512 slots), the first call (cold and warm kernel cache), and the
# whole gpu test tier. Writes its logs and JSON under $OUT; figures go to
# bench/RESULTS_issue15.md. The parts take more than one call's 10 minutes: run them as
#   PARTS="refill" bash bench/gpu/run_issue15.sh        (about 3 minutes)
#   PARTS="sweep instr" bash bench/gpu/run_issue15.sh   (about 5 minutes)
#   PARTS="first tests" bash bench/gpu/run_issue15.sh   (about 5 minutes)
# `refill` times the rounds as shipped (adapted to the mix) against rounds fixed at 8 and 16
# steps (the engine before) in one process; `sweep` the prefill's attention kernel as shipped
# (memory-efficient) against PyTorch's pick (cuDNN), on admission shapes new to the process and
# then seen; `instr` both kernels in both phases at 256 and 512 slots, fresh processes.
# (device, repository root, after `python -m pip install -q --no-index --no-deps .device-wheels/*.whl`).
set -uo pipefail
out=${OUT:-bench-out}
mkdir -p "$out"
parts=" ${PARTS:-refill sweep instr first tests} "
export PYTHONUNBUFFERED=1
# The device's Python keeps no bytecode cache beside its packages, so without this every fresh
# `runner` process compiles torch, transformers, scipy and sklearn from source (10.3 s of
# `compile` in one profiled process, RESULTS_issue15.md 2d): a cost a normal install does not
# have. The first process fills this folder; the timed ones after it read it.
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-/tmp/runner-pycache}
unset PYTHONDONTWRITEBYTECODE
quiet() { grep -v -E '^\s*$|\[(info|debug|warning) *\]|"event"'; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u
  python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$out/env.txt"
if [[ $parts == *" refill "* ]]; then
  echo "== refill on the length mix (rounds adapted to the mix, and fixed at 8 and 16 steps)"
  (cd bench && timeout ${REFILL_S:-240} python bench_refill.py --out "$out" 2>&1) | quiet \
    | tee "$out/refill.log" | tail -40
fi
if [[ $parts == *" sweep "* ]]; then
  echo "== refill on the mix, prefill attention memory-efficient and cuDNN, new shapes then seen"
  (cd bench && timeout ${SWEEP_S:-150} python bench_refill.py --out "$out" --sweep adaptive \
    --prefill efficient,auto --repeats 2 2>&1) | quiet | tee "$out/sweep.log" | tail -8
fi
if [[ $parts == *" instr "* ]]; then
  echo "== both generation phases at 4,000 examples, prefill kernels efficient and auto (fresh processes)"
  (cd bench/gpu && timeout ${INSTR_S:-420} python bench_instructions.py --out "$out" --skip-row \
    --slots 256,512 --rounds adaptive --prefill efficient,auto 2>&1) | quiet | tail -8 \
    | tee "$out/instructions.log"
fi
if [[ $parts == *" first "* ]]; then
  echo "== first call (fresh processes: cold kernel cache, then warm)"
  OUT="$out" VARIANTS="main helper-wait" bash bench/gpu/first_call.sh 2>&1 | tee "$out/first_call.log"
fi
if [[ $parts == *" tests "* ]]; then
  echo "== gpu test tier"
  timeout ${TESTS_S:-200} python -m pytest -q -m gpu tests -p no:cacheprovider 2>&1 \
    | tail -12 | tee "$out/gpu_tests.log"
fi
