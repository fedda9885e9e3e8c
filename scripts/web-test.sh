#!/usr/bin/env bash
# Runs the engine's browser tests (engine/tests/web_goldens.rs): the wasm build of the engine on WebGPU in headless
# Chromium, whose WebGPU adapter is SwiftShader on machines without a GPU. Installs what is missing (Chromium and
# chromedriver from Debian, wasm-bindgen-test-runner from crates.io) and is quick when everything is there.
# Under CI=true a missing WebGPU adapter fails the tests instead of skipping them.
# Extra arguments go to the test harness, e.g. `scripts/web-test.sh gemma3` runs only the Gemma 3 tests.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
die() { echo "web-test: $*" >&2; exit 1; }

# Chromium ships SwiftShader, so WebGPU works without a GPU; chromedriver is how the test runner drives it.
missing=()
for pkg in chromium chromium-driver; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "Chromium and chromedriver are needed: install them (Debian: apt-get install chromium chromium-driver)"
  echo "installing ${missing[*]} with apt…"
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq "${missing[@]}"
fi
chromium=$(command -v chromium || true)
chromedriver=$(command -v chromedriver || true)
[ -n "$chromium" ] || die "Chromium is missing (expected \`chromium\` on PATH; Debian package chromium)"
[ -n "$chromedriver" ] || die "chromedriver is missing (expected \`chromedriver\` on PATH; Debian package chromium-driver)"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

# The runner must be exactly the wasm-bindgen version the test links against, or it refuses the wasm.
wb_version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
[ -n "$wb_version" ] || die "no wasm-bindgen in Cargo.lock"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [ "$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}')" != "$wb_version" ]; then
  echo "installing wasm-bindgen-cli $wb_version (several minutes)…"
  # Not --locked: the crate's own lockfile pins a webpki-roots version crates.io no longer has.
  cargo install wasm-bindgen-cli --version "$wb_version"
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

# .cargo/config.toml makes wasm-bindgen-test-runner the runner; --nocapture shows each model's worst error.
cargo test -p engine --target wasm32-unknown-unknown --test web_goldens -- --nocapture "$@"

# The app's own logic that lives only on wasm (app/tests/web_*.rs: storage, markdown, …), in the same browser.
if compgen -G "app/tests/web_*.rs" >/dev/null; then
  cargo test -p app --target wasm32-unknown-unknown --test 'web_*' -- --nocapture
fi
