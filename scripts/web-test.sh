#!/usr/bin/env bash
# Runs the engine's browser tests (engine/tests/web_goldens.rs): the wasm build of the engine on WebGPU in headless
# Chromium, whose WebGPU adapter is SwiftShader on machines without a GPU; and the app's own wasm tests. Installs what
# is missing (scripts/setup.sh) and is quick when everything is there.
# Under CI=true a missing WebGPU adapter fails the tests instead of skipping them.
# Extra arguments go to the test harness, e.g. `scripts/web-test.sh gemma3` runs only the Gemma 3 tests;
# `--no-run` only builds them.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "web-test: $*" >&2; exit 1; }

# Chromium ships SwiftShader, so WebGPU works without a GPU; chromedriver is how the test runner drives it. The setup
# installs both, and wasm-bindgen-test-runner at Cargo.lock's wasm-bindgen version (the runner must be exactly the
# version the tests link against, or it refuses the wasm).
scripts/setup.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
chromium=$(command -v chromium || true)
chromedriver=$(command -v chromedriver || true)
[ -n "$chromium" ] || die "Chromium is missing (expected \`chromium\` on PATH; Debian package chromium)"
[ -n "$chromedriver" ] || die "chromedriver is missing (expected \`chromedriver\` on PATH; Debian package chromium-driver)"

# The tests run in the release profile the app is built with (scripts/build-web.sh): they then link the same
# compiled dependencies instead of a second, debug build of all of them.
# The engine's CPU tests run a second time in the worker's build with SIMD128 and relaxed SIMD (scripts/build-web.sh
# builds it in its own target directory with these flags, which these tests share): its core::arch::wasm32 kernels,
# on wasm's fused relaxed multiply-add and on the emulation the SIMD128-only worker runs, against the portable ones
# bit for bit (tests/web_cpu_simd.rs), and the CPU backend against the tiny goldens.
target_dir=$(cargo metadata --format-version 1 --no-deps | node -e 'console.log(JSON.parse(require("fs").readFileSync(0)).target_directory)')
simd() {
  CARGO_TARGET_DIR="$target_dir/wasm-relaxed" RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+simd128,+relaxed-simd" \
    cargo test --release -p engine --target wasm32-unknown-unknown --test web_cpu_simd --test web_goldens "$@"
}
if [ "${1:-}" = --no-run ]; then
  cargo test --release -p engine -p app --target wasm32-unknown-unknown --test 'web_*' --no-run
  simd --no-run
  exit 0
fi

# A fresh profile per run, so nothing cached from an earlier run (or another browser) changes what WebGPU sees. The
# last three flags give headless Chromium its SwiftShader WebGPU adapter; without them there is none.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/webdriver.json" <<JSON
{
  "goog:chromeOptions": {
    "binary": "$chromium",
    "args": [
      "--headless=new", "--no-sandbox", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--user-data-dir=$tmp/profile",
      "--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-webgpu-adapter=swiftshader"
    ]
  }
}
JSON
export WASM_BINDGEN_TEST_WEBDRIVER_JSON="$tmp/webdriver.json"
export CHROMEDRIVER="$chromedriver"
# The runner's default is 20 s for the whole page; SwiftShader runs the goldens on the CPU.
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-600}"

# One cargo invocation for the engine's goldens and the app's own wasm-only logic (app/tests/web_*.rs: storage,
# markdown, …) in the same browser. .cargo/config.toml makes wasm-bindgen-test-runner the runner; --nocapture shows
# each model's worst error.
status=0
cargo test --release -p engine -p app --target wasm32-unknown-unknown --test 'web_*' --no-fail-fast -- --nocapture "$@" || status=$?
# In the relaxed SIMD build only the CPU tests (their names say cpu), unless arguments choose others.
if [ $# -eq 0 ]; then set -- cpu; fi
simd --no-fail-fast -- --nocapture "$@" || status=$?
exit $status
