#!/usr/bin/env bash
# Magpie throughput at several batch sizes (BENCHMARKS.md), natively and in the browser, in one run on one machine:
# `aviary bench-magpie` on the CPU and GPU backends, then the app's Magpie view in headless Chromium on WebGPU and on
# the CPU (tests/bench/magpie-bench.mjs). Every measurement makes the same samples, so each batch size generates the
# same tokens. Writes target/bench-magpie.jsonl.
#   BATCHES (1,4,8,16), N, INS_MAX_TOKENS, MAX_TOKENS change the native workload; WEB_BATCHES (1,4), WEB_N,
#   WEB_INS_MAX_TOKENS, WEB_MAX_TOKENS the browser's (smaller: SwiftShader and the scalar wasm CPU path are slow); BENCH_SKIP_BUILD=1
#   reuses dist/; BENCH_NATIVE=0 skips the native half; BACKENDS (gpu,cpu) picks the browser's.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bench-magpie: $*" >&2; exit 1; }
source scripts/app-under-test.sh
prepare_app "${BENCH_SKIP_BUILD:-0}"
artifacts=target/bench-magpie-artifacts
mkdir -p "$artifacts"
with_scratch_dir
out=target/bench-magpie.jsonl
: >"$out"

batches=${BATCHES:-1,4,8,16}
for backend in $([ "${BENCH_NATIVE:-1}" = 0 ] || echo cpu gpu); do
  # lavapipe decodes ~15x slower than the CPU backend: a shorter workload keeps the run within minutes.
  if [ "$backend" = cpu ]; then n=${N:-16} ins=${INS_MAX_TOKENS:-32} max=${MAX_TOKENS:-64}; else n=${N:-16} ins=12 max=12; fi
  "$aviary" bench-magpie --model "$model" --backend "$backend" --batches "$batches" --n "$n" \
    --ins-max-tokens "$ins" --max-tokens "$max" --json | tee -a "$out"
done

serve_app dist "$artifacts/serve.log" "$tmp" "$(dirname "$model")"
export AVIARY_URL="$url" MODEL_PATH="models/$(basename "$model")" ARTIFACTS="$artifacts" BATCHES="${WEB_BATCHES:-1,4}"
export N="${WEB_N:-4}" INS_MAX_TOKENS="${WEB_INS_MAX_TOKENS:-6}" MAX_TOKENS="${WEB_MAX_TOKENS:-6}" OUT="$tmp/web.jsonl"
node tests/bench/magpie-bench.mjs
cat "$tmp/web.jsonl" >>"$out"
echo "bench-magpie: results in $out"
