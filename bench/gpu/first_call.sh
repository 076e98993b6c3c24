#!/usr/bin/env bash
# Issue 15, item 3: the first call's cost, cold and warm kernel cache, for each way of getting
# the Triton kernels built (bench/first_call.py --variant). Every run is a fresh process; each
# variant gets its own fresh TRITON_CACHE_DIR, run twice (cold, then warm). Writes
# $OUT/first_call.jsonl, first_call.json and first_call.md and prints the table last.
#   Run (device, repository root): bash bench/gpu/first_call.sh      (about 3 minutes)
#   CPU smoke (tiny model):        FIRST_CALL_TINY=1 OUT=/tmp/fc bash bench/gpu/first_call.sh
set -uo pipefail
out=${OUT:-bench-out}
mkdir -p "$out"
rm -f "$out/first_call.jsonl"
export PYTHONUNBUFFERED=1
tiny=${FIRST_CALL_TINY:+--tiny}
variants=${VARIANTS:-main fewer helper helper-wait}  # and `thread` (issue 15's first try) on request
for v in $variants; do
  d=$(mktemp -d)
  for c in cold warm; do
    TRITON_CACHE_DIR=$d timeout ${FIRST_S:-80} python bench/first_call.py $tiny --variant "$v" \
      --cache "$c" --out "$out" 2>&1 | grep -v -E '^\s*$|\[(info|debug|warning) *\]|"event"' | tail -3
  done
  rm -rf "$d"
done
python bench/first_call.py --report --out "$out"
