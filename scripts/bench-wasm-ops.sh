#!/usr/bin/env bash
# The CPU path's wasm builds op by op in node (engine/tests/wasm_op_costs.rs): each decode product and attention step
# in SmolLM2-135M's shapes, per token, and a model load split into file, header + tokenizer, weights. BUILD=relaxed
# (the default: SIMD128 with relaxed SIMD, the worker Chromium starts; node 20 needs a flag for it) or BUILD=simd128.
# Seconds instead of a browser session's minutes, for finding where the browser's CPU time goes; `make bench-web` is
# the measurement beside wllama. MODEL (a GGUF) defaults to SmolLM2-135M-Instruct Q4_1.
set -euo pipefail
cd "$(dirname "$0")/.."
export MODEL="${MODEL:-${AVIARY_CACHE:-$HOME/.cache/aviary}/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
target_dir=$(cargo metadata --format-version 1 --no-deps | node -e 'console.log(JSON.parse(require("fs").readFileSync(0)).target_directory)')
case "${BUILD:-relaxed}" in
  relaxed) export CARGO_TARGET_DIR="$target_dir/wasm-relaxed" RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+simd128,+relaxed-simd"
    export NODE_ARGS=--experimental-wasm-relaxed-simd ;;
  simd128) export CARGO_TARGET_DIR="$target_dir/wasm-simd" RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+simd128" ;;
  *) echo "bench-wasm-ops: BUILD is relaxed or simd128" >&2; exit 1 ;;
esac
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
node -e 'process.exit(process.getBuiltinModule ? 0 : 1)' || { echo "bench-wasm-ops: needs node ≥ 20.16" >&2; exit 1; }
cargo test --release -p engine --target wasm32-unknown-unknown --test wasm_op_costs -- --nocapture 2>&1 |
  grep -E 'per token|^load '
