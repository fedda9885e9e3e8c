#!/usr/bin/env bash
# End-to-end tests of the browser app (tests/e2e/: all.test.mjs registers the suites of the files beside it, helpers
# in lib.mjs): builds it (release, as `make run` does), serves it with `aviary serve` on a free port of 127.0.0.1
# together with the default model and a tiny one, and runs the suites in one `node --test`, which drives headless
# Chromium (WebGPU on SwiftShader when there is no GPU) with playwright-core. The UI's suites use the tiny model,
# which loads in about a second; the default model's suite checks what needs a real model. The expected greedy
# answers are computed here by the native CLI for the same prompt, settings and model.
# Screenshots and browser logs go to target/e2e-artifacts/.
#   E2E_SKIP_BUILD=1 reuses dist/ as it is; arguments name the suites to run (chat, models, device, default-model,
#   magpie, lora, share, loads, offline, train), all when none.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "e2e-test: $*" >&2; exit 1; }
source scripts/app-under-test.sh
prepare_app "${E2E_SKIP_BUILD:-0}"

artifacts=target/e2e-artifacts
rm -rf "$artifacts"
mkdir -p "$artifacts"
with_scratch_dir

# The models the server offers: those beside the default one (the catalog probes for Gemma 3 with a HEAD request),
# and the tiny Llama fixture (random weights, but a real vocabulary and chat template, so the app tokenizes,
# templates and detokenizes it like any model) under a name that says so.
tiny_file=tests/fixtures/tiny/llama/model-q8_0.gguf
tiny_name=tiny-llama-q8_0.gguf
mkdir "$tmp/models"
ln -s "$(dirname "$model")"/*.gguf "$tmp/models/"
ln -s "$PWD/$tiny_file" "$tmp/models/$tiny_name"
# Its f32 twin: the same vocabulary, other arithmetic — the Compare view's teacher beside the tiny student.
teacher_file=tests/fixtures/tiny/llama/model-f32.gguf
ln -s "$PWD/$teacher_file" "$tmp/models/tiny-llama-f32.gguf"
# The LoRA suite's adapter for the default model, served beside it; the suite writes a broken one into the same
# folder, and asks the CLI (AVIARY_BIN) for the answers with and without the adapter.
lora_file=tests/fixtures/lora/smollm2/adapter.gguf
mkdir "$tmp/models/lora"
ln -s "$PWD/$lora_file" "$tmp/models/lora/"

# A prompt whose greedy answer has clear margins: the CPU backend and the GPU backend (lavapipe, f16 and f32) agree
# on it. On "What is the capital of France?" they part at the eighth token, where the top two logits are 0.07 apart
# (a genuine near-tie, where SwiftShader and lavapipe may round either way).
export PROMPT="Name the three primary colors."
export MAX_TOKENS=24
# The browser's adapter may lack shader-f16 (SwiftShader does), so the CLI answers both ways; a test compares with
# the one whose arithmetic the browser's adapter uses. The CPU backend's answer is for the page without WebGPU.
echo "expected answers: aviary generate (greedy, $MAX_TOKENS tokens) on the GPU with f16 where available, with f32,"
echo "on the CPU, for the default and the tiny model…"
generate() { "$aviary" generate --model "$1" --prompt "$PROMPT" --max-tokens "$MAX_TOKENS" --json "${@:2}"; }
answers() { # MODEL NAME: writes NAME.json, NAME-f32.json, NAME-cpu.json into $tmp
  generate "$1" --backend gpu >"$tmp/$2.json"
  generate "$1" --backend gpu --gpu-f32 >"$tmp/$2-f32.json"
  generate "$1" --backend cpu >"$tmp/$2-cpu.json"
  cat "$tmp/$2.json" "$tmp/$2-f32.json" "$tmp/$2-cpu.json"
}
answers "$model" expected
# The UI's suites run the tiny model on the CPU backend, which answers as the CLI's bit for bit: its random weights
# leave near-ties that a GPU's rounding may break either way. Its GPU answers are for one WebGPU check.
answers "$tiny_file" expected-tiny
# The Magpie view must write these rows on the CPU backend with the same model, settings, seed and batch
# (tests/e2e/magpie.mjs sets the same numbers).
echo "expected Magpie rows: aviary magpie on the CPU, for the default model…"
"$aviary" magpie --model "$model" --backend cpu --n 3 --seed 7 --batch 2 --ins-max-tokens 24 --max-tokens 32 \
  --out "$tmp/expected-magpie.jsonl"

# The app is served from a copy of dist/ (SITE_DIR): the offline suite publishes an update there (a changed shell,
# re-stamped with scripts/stamp-sw.sh) and puts it back, and dist/ itself is never touched.
cp -r dist "$tmp/site"
export SITE_DIR="$tmp/site"
serve_app "$SITE_DIR" "$artifacts/serve.log" "$tmp" "$tmp/models"
echo "app served at $url"

export MODEL_FILE="$model" TINY_MODEL_FILE="$tiny_file" TINY_MODEL_URL="models/$tiny_name"
export TINY_TEACHER_FILE="$teacher_file" TINY_TEACHER_URL="models/tiny-llama-f32.gguf"
export LORA_FILE="$lora_file" LORA_DIR="$tmp/models/lora" LORA_URL="models/lora/$(basename "$lora_file")" AVIARY_BIN="$aviary"
export AVIARY_URL="$url" ARTIFACTS="$artifacts" SERVE_LOG="$artifacts/serve.log"
export EXPECTED_JSON="$tmp/expected.json" EXPECTED_F32_JSON="$tmp/expected-f32.json" EXPECTED_CPU_JSON="$tmp/expected-cpu.json"
export EXPECTED_TINY_JSON="$tmp/expected-tiny.json" EXPECTED_TINY_F32_JSON="$tmp/expected-tiny-f32.json"
export EXPECTED_TINY_CPU_JSON="$tmp/expected-tiny-cpu.json"
export EXPECTED_MAGPIE_JSONL="$tmp/expected-magpie.jsonl"
E2E_SUITES=$(IFS=,; echo "$*")
export E2E_SUITES
node --test --test-reporter=spec tests/e2e/all.test.mjs ||
  die "some browser tests failed (screenshots and browser logs: $artifacts/)"
