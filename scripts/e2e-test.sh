#!/usr/bin/env bash
# End-to-end tests of the browser app (tests/e2e/*.test.mjs, helpers in tests/e2e/lib.mjs): builds it (release, as
# `make run` does), serves it with `aviary serve` on a free port of 127.0.0.1 together with the default model, and
# runs each test, which drives headless Chromium (WebGPU on SwiftShader when there is no GPU) with playwright-core.
# The expected greedy answers are computed here by the native CLI for the same prompt, settings and model.
# Screenshots and browser logs go to target/e2e-artifacts/.
#   E2E_SKIP_BUILD=1 reuses dist/ as it is; arguments name the tests to run (e.g. `chat`), all when none.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "e2e-test: $*" >&2; exit 1; }
source scripts/app-under-test.sh
prepare_app "${E2E_SKIP_BUILD:-0}"

artifacts=target/e2e-artifacts
mkdir -p "$artifacts"
with_scratch_dir

# A prompt whose greedy answer has clear margins: the CPU backend and the GPU backend (lavapipe, f16 and f32) agree
# on it. On "What is the capital of France?" they part at the eighth token, where the top two logits are 0.07 apart
# (a genuine near-tie, where SwiftShader and lavapipe may round either way).
export PROMPT="Name the three primary colors."
export MAX_TOKENS=24
# The browser's adapter may lack shader-f16 (SwiftShader does), so the CLI answers both ways; a test compares with
# the one whose arithmetic the browser's adapter uses. The CPU backend's answer is for the page without WebGPU.
echo "expected answers: aviary generate (greedy, $MAX_TOKENS tokens) on the GPU with f16 where available, with f32, on the CPU…"
generate() { "$aviary" generate --model "$model" --prompt "$PROMPT" --max-tokens "$MAX_TOKENS" --json "$@"; }
generate --backend gpu >"$tmp/expected.json"
generate --backend gpu --gpu-f32 >"$tmp/expected-f32.json"
generate --backend cpu >"$tmp/expected-cpu.json"
cat "$tmp/expected.json" "$tmp/expected-f32.json" "$tmp/expected-cpu.json"

serve_app dist "$artifacts/serve.log" "$tmp"
echo "app served at $url"

export MODEL_FILE="$model" AVIARY_URL="$url" ARTIFACTS="$artifacts"
export EXPECTED_JSON="$tmp/expected.json" EXPECTED_F32_JSON="$tmp/expected-f32.json" EXPECTED_CPU_JSON="$tmp/expected-cpu.json"
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
  for f in tests/e2e/*.test.mjs; do tests+=("$(basename "$f" .test.mjs)"); done
fi
failed=()
for t in "${tests[@]}"; do
  echo "== e2e: $t"
  node "tests/e2e/$t.test.mjs" || failed+=("$t")
done
[ ${#failed[@]} -eq 0 ] || die "failed: ${failed[*]}"
