#!/usr/bin/env bash
# `make test`: installs what is missing, builds everything once, runs every test, and ends with how long each stage
# took. Builds go to one cargo target directory (CARGO_TARGET_DIR, which the Makefile points into $AVIARY_CACHE) so
# a later run — from this clone or a fresh one — rebuilds only what changed; cargo's own fingerprints decide that, so a
# cached build never stands in for changed code.
#
# Stages: setup · native build · native tests · wasm build · wasm tests · browser tests. A failing test stage does
# not stop the later ones (every failure is reported); a failing setup or build does.
set -uo pipefail
cd "$(dirname "$0")/.."

stages=()
failed=()
started=$(date +%s)

# Mesa's Vulkan driver complains on every adapter it opens when there is no XDG_RUNTIME_DIR (as in CI); a private one
# keeps the test output readable.
runtime_dir=
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  runtime_dir=$(mktemp -d)
  export XDG_RUNTIME_DIR=$runtime_dir
fi

report() {
  [ -z "$runtime_dir" ] || rm -rf "$runtime_dir"
  local total=$(($(date +%s) - started))
  echo
  echo "make test: time by stage"
  for s in "${stages[@]}"; do echo "  $s"; done
  printf '  %-16s %3dm%02ds\n' total $((total / 60)) $((total % 60))
  if [ ${#failed[@]} -gt 0 ]; then echo "make test: FAILED: ${failed[*]}"; else echo "make test: all stages passed"; fi
}
trap report EXIT

# stage NAME required|continue COMMAND...
stage() {
  local name=$1 mode=$2
  shift 2
  echo
  echo "=== $name"
  local t0=$(date +%s) status=0
  "$@" || status=$?
  local dt=$(($(date +%s) - t0))
  stages+=("$(printf '%-16s %3dm%02ds%s' "$name" $((dt / 60)) $((dt % 60)) "$([ $status = 0 ] || echo "  FAILED ($status)")")")
  if [ $status != 0 ]; then
    failed+=("$name")
    [ "$mode" = continue ] || exit $status
  fi
}

setup() {
  scripts/setup.sh && scripts/fetch-models.sh && scripts/fetch-reference.sh
}

# The native workspace with its tests, and the CLI the browser tests take their expected answers from.
native_build() {
  cargo build --release --workspace --tests --bins
}

native_tests() {
  cargo test --release --workspace --no-fail-fast
}

# The app (release, as `make run` serves it) and the wasm tests, in the release profile too: the tests link the
# very dependencies the app was built with instead of compiling them all again.
wasm_build() {
  scripts/build-web.sh && scripts/web-test.sh --no-run
}

stage setup required setup
stage "native build" required native_build
stage "native tests" continue native_tests
stage "wasm build" required wasm_build
stage "wasm tests" continue scripts/web-test.sh
stage "browser tests" continue env E2E_SKIP_BUILD=1 scripts/e2e-test.sh

[ ${#failed[@]} -eq 0 ]
