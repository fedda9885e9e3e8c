#!/usr/bin/env bash
# The browser benchmark (tests/bench/web-bench.mjs): Aviary's app on WebGPU (SwiftShader when there is no GPU) and
# on the CPU, beside wllama (npm @wllama/wllama, llama.cpp in WebAssembly), in the same headless Chromium, on the
# default model, with the same greedy question. Prints a table and writes target/bench-web.json.
#
# One `aviary serve` serves both pages from one origin: a directory made for this run holds links to the built
# app's files (dist/), to the wllama page (tests/bench/wllama/) and to the package files it imports; the server
# follows links. It sends COOP/COEP, so both pages are cross-origin isolated; wllama still runs its single-thread
# build, because by default it asks for half the hardware threads (1 on a 2-core machine), unless the variant asks
# for every core (wllama-cpu-mt). Aviary's CPU path runs its threaded build on every core (aviary-cpu), or that build
# on one thread (aviary-cpu-1t).
#   BENCH_SKIP_BUILD=1 reuses dist/ when it exists; QUESTION and MAX_TOKENS change the workload.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bench-web: $*" >&2; exit 1; }
source scripts/app-under-test.sh
prepare_app "${BENCH_SKIP_BUILD:-0}"

artifacts=target/bench-web-artifacts
mkdir -p "$artifacts"
with_scratch_dir

site="$tmp/site"
mkdir -p "$site/wllama-bench"
for f in dist/*; do ln -s "$PWD/$f" "$site/"; done
for f in tests/bench/wllama/*; do ln -s "$PWD/$f" "$site/wllama-bench/"; done
ln -s "$PWD/node_modules/@wllama/wllama/esm" "$site/wllama-bench/wllama"
ln -s "$PWD/node_modules/@huggingface/jinja/dist" "$site/wllama-bench/jinja"

serve_app "$site" "$artifacts/serve.log" "$tmp"
echo "app at $url, wllama at ${url}wllama-bench/"

busy=$(pgrep -c -x 'cargo|rustc|trunk' || true)
export BUSY="$busy"
[ "$busy" = 0 ] || echo "bench-web: warning: $busy cargo/rustc/trunk processes are running; the numbers will be lower" >&2

# About 64 prompt tokens with the model's template (its default system prompt included), and an answer longer
# than MAX_TOKENS, so every engine decodes exactly MAX_TOKENS tokens.
export QUESTION="${QUESTION:-Explain why the sky is blue during the day but turns red and orange at sunset. Mention Rayleigh scattering and how far sunlight travels through the air.}"
export MAX_TOKENS="${MAX_TOKENS:-32}"
export AVIARY_URL="$url" MODEL_PATH="models/$(basename "$model")" OUT=target/bench-web.json ARTIFACTS="$artifacts"
node tests/bench/web-bench.mjs
