#!/usr/bin/env bash
# Builds the browser app into dist/ with trunk, offline, with the pinned tools (scripts/web-setup.sh installs them):
# wasm-opt from node_modules/.bin comes first on PATH. Release (size-optimised) unless --debug is given; other
# arguments go to trunk.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
mode=(--release)
args=()
for a in "$@"; do
  if [ "$a" = --debug ]; then mode=(); else args+=("$a"); fi
done
exec trunk build --offline "${mode[@]}" "${args[@]}"
