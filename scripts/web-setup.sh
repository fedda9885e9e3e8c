#!/usr/bin/env bash
# Installs what building the browser app and running its end-to-end tests need, each only when missing or at the
# wrong version, so a second run is quick:
#   - Node.js and npm (Debian packages);
#   - node_modules from package-lock.json (`npm ci`): wasm-opt from npm's binaryen (Debian's older one produces a
#     wasm that fails at run time), playwright-core (it drives the system Chromium; it never downloads browsers) and
#     @wllama/wllama (the peer scripts/bench-web.sh measures beside the app);
#   - the wasm32 target and the standard library's source (rustup);
#   - wasm-bindgen-cli at exactly Cargo.lock's wasm-bindgen version (crates.io; about 2 minutes to build): the
#     bindings scripts/build-web.sh generates, and the runner of the wasm tests (scripts/web-test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
die() { echo "web-setup: $*" >&2; exit 1; }
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  command -v apt-get >/dev/null || die "Node.js and npm are needed (Debian: apt-get install nodejs npm)"
  echo "installing nodejs and npm with apt…"
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq nodejs npm
fi

# node_modules is current when it was installed from this very package-lock.json.
stamp=node_modules/.aviary-package-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "installing node_modules (npm ci)…"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
# The standard library's source: the threaded worker build compiles it again with atomics (scripts/build-web.sh).
if ! rustup component list --installed 2>/dev/null | grep -qx rust-src; then
  rustup component add rust-src
fi

wb_version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
[ -n "$wb_version" ] || die "no wasm-bindgen in Cargo.lock"
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wb_version" ]; then
  echo "installing wasm-bindgen-cli $wb_version (several minutes)…"
  # Not --locked: the crate's own lockfile pins a webpki-roots version crates.io no longer has.
  env -u CARGO_TARGET_DIR cargo install wasm-bindgen-cli --version "$wb_version"
fi
