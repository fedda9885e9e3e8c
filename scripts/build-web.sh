#!/usr/bin/env bash
# Builds the browser app into dist/ from index.html: the page (app/src/main.rs) and the engine's worker
# (app/src/bin/worker/) as two wasm bundles — cargo, then wasm-bindgen (the page as an ES module, the worker as a
# classic script started by worker_loader.js), then wasm-opt -Oz — with the pinned tools scripts/web-setup.sh installs
# (wasm-bindgen-cli at Cargo.lock's version; npm's binaryen, whose wasm-opt comes first on PATH). Release unless
# --debug is given (cargo's dev profile, no wasm-opt).
#
# The page's files are named by their content (cache busting); the worker's keep fixed names because the page starts
# it by name. The worker is built three times: portable (worker*.js, worker_bg.wasm), with wasm SIMD128
# (worker-simd*) and with SIMD128 and relaxed SIMD (worker-relaxed*); the page probes the browser and starts the most
# capable one it validates, so only that one is downloaded; a fourth build adds threads (worker-threads*, started where
# the page is cross-origin isolated: see below). wasm-opt's
# output is kept in the target directory by the hash of its input, version and flags, so an unchanged bundle is not
# optimised twice. public/ (the web manifest, icons, the service worker) is copied beside them
# and the service worker stamped by scripts/stamp-sw.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
die() { echo "build-web: $*" >&2; exit 1; }

profile=release
cargo_mode=(--release)
for a in "$@"; do
  case "$a" in
    --debug) profile=debug; cargo_mode=() ;;
    *) die "unknown argument $a (only --debug)" ;;
  esac
done

wb_version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
[ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" = "$wb_version" ] ||
  die "wasm-bindgen $wb_version (Cargo.lock's) is needed: run scripts/web-setup.sh"
command -v wasm-opt >/dev/null || die "wasm-opt is missing: run scripts/web-setup.sh"

cargo build "${cargo_mode[@]}" --target wasm32-unknown-unknown -p app --bin app --bin worker
target_dir=$(cargo metadata --format-version 1 --no-deps | node -e 'console.log(JSON.parse(require("fs").readFileSync(0)).target_directory)')
wasm_dir="$target_dir/wasm32-unknown-unknown/$profile"
# The worker a second time with wasm SIMD128 (the engine's CPU kernels in core::arch::wasm32, and LLVM's own
# vectorising): the page starts this one where the browser validates a SIMD module, else the portable one above.
# Its own target directory, so the two RUSTFLAGS do not rebuild each other's dependencies.
simd_target_dir="$target_dir/wasm-simd"
CARGO_TARGET_DIR="$simd_target_dir" RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+simd128" \
  cargo build "${cargo_mode[@]}" --target wasm32-unknown-unknown -p app --bin worker
simd_wasm_dir="$simd_target_dir/wasm32-unknown-unknown/$profile"
# And a third time with relaxed SIMD too, for f32x4.relaxed_madd: where the engine fuses it (wherever the hardware has
# FMA) the CPU kernels' fused multiply-adds are one instruction instead of an emulation through f64.
relaxed_target_dir="$target_dir/wasm-relaxed"
CARGO_TARGET_DIR="$relaxed_target_dir" RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+simd128,+relaxed-simd" \
  cargo build "${cargo_mode[@]}" --target wasm32-unknown-unknown -p app --bin worker
relaxed_wasm_dir="$relaxed_target_dir/wasm32-unknown-unknown/$profile"
# And a fourth time with threads: shared memory (+atomics), so the CPU kernels split their work over web workers
# running the same module (src/bin/worker/pool.rs), as natively over rayon's threads. wasm32's prebuilt standard
# library has no atomics, so it is rebuilt with them (-Z build-std through RUSTC_BOOTSTRAP on this stable toolchain,
# from its rust-src component, which scripts/web-setup.sh installs). Shared memory needs a declared maximum: 4 GiB,
# wasm32's whole address space, as the other builds may grow to.
# The link arguments (memory imported and shared, the thread-local storage exports wasm-bindgen's thread start needs)
# go to the final link only, through `cargo rustc`, so changing them relinks instead of rebuilding every crate.
threads_target_dir="$target_dir/wasm-threads"
CARGO_TARGET_DIR="$threads_target_dir" RUSTC_BOOTSTRAP=1 \
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+simd128,+relaxed-simd,+atomics,+bulk-memory,+mutable-globals -C link-arg=--max-memory=4294967296" \
  cargo rustc "${cargo_mode[@]}" --target wasm32-unknown-unknown -p app --bin worker -Z build-std=panic_abort,std -- \
  -C link-arg=--shared-memory -C link-arg=--import-memory \
  -C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size -C link-arg=--export=__tls_align \
  -C link-arg=--export=__tls_base
threads_wasm_dir="$threads_target_dir/wasm32-unknown-unknown/$profile"
opt_cache="$target_dir/wasm-opt"
mkdir -p "$opt_cache"
# wasm-bindgen writes into a directory of this build's own (the target directory may be shared with other clones), and
# the new dist/ is assembled beside the old one and swapped in whole, so a failed build leaves the last good one.
bindgen_dir=$(mktemp -d)
stage=$(mktemp -d dist.tmp.XXXXXX)
chmod 755 "$stage"
trap 'rm -rf "$stage" "$bindgen_dir"' EXIT

wasm-bindgen --target web --no-typescript --out-dir "$bindgen_dir" --out-name app "$wasm_dir/app.wasm"
wasm-bindgen --target no-modules --no-typescript --out-dir "$bindgen_dir" --out-name worker "$wasm_dir/worker.wasm"
wasm-bindgen --target no-modules --no-typescript --out-dir "$bindgen_dir" --out-name worker-simd "$simd_wasm_dir/worker.wasm"
wasm-bindgen --target no-modules --no-typescript --out-dir "$bindgen_dir" --out-name worker-relaxed "$relaxed_wasm_dir/worker.wasm"
wasm-bindgen --target no-modules --no-typescript --out-dir "$bindgen_dir" --out-name worker-threads "$threads_wasm_dir/worker.wasm"

optimised() { # bundle.wasm dest [level]: wasm-opt -Oz (or level), or the output kept from the last run on the same input
  if [ "$profile" = debug ]; then cp "$1" "$2"; return; fi
  local key level=${3:--Oz} # the input, the tool's version and its flags
  key=$( (sha256sum <"$1"; wasm-opt --version; echo "$level") | sha256sum | cut -c1-32)
  if [ ! -f "$opt_cache/$key.wasm" ]; then
    echo "wasm-opt $level $(basename "$1") ($(($(stat -c %s "$1") / 1024)) KiB)…"
    wasm-opt "$level" --output="$opt_cache/$key.wasm.tmp" "$1"
    mv "$opt_cache/$key.wasm.tmp" "$opt_cache/$key.wasm"
  fi
  cp "$opt_cache/$key.wasm" "$2"
}
prune_opt_cache() { # the last few outputs are enough to skip wasm-opt for an unchanged bundle
  ls -t "$opt_cache"/*.wasm 2>/dev/null | tail -n +10 | xargs -r rm -f
}
hash_of() { sha256sum "$1" | cut -c1-16; }

# wasm-opt runs on one core: two bundles at a time (a failure stops the build at its `wait`).
running=()
optimise_soon() {
  optimised "$@" &
  running+=($!)
  if [ ${#running[@]} -ge 2 ]; then
    wait "${running[0]}"
    running=("${running[@]:1}")
  fi
}
for b in app worker worker-simd worker-relaxed; do
  optimise_soon "$bindgen_dir/${b}_bg.wasm" "$stage/${b}_bg.wasm"
done
# -Oz cost the threaded build ~15% of its prefill in `make bench-web` (62 against 70-75 tok/s unoptimised or at
# -O3); -O3 is 2% larger than -Oz.
optimise_soon "$bindgen_dir/worker-threads_bg.wasm" "$stage/worker-threads_bg.wasm" -O3
for p in "${running[@]}"; do wait "$p"; done

app_hash=$(hash_of "$stage/app_bg.wasm")
app_wasm="app-${app_hash}_bg.wasm"
app_js="app-${app_hash}.js"
mv "$stage/app_bg.wasm" "$stage/$app_wasm"
cp "$bindgen_dir/app.js" "$stage/$app_js"

cp "$bindgen_dir/worker.js" "$stage/worker.js"
printf '%s' 'importScripts("./worker.js");wasm_bindgen({ module_or_path: "./worker_bg.wasm" });' >"$stage/worker_loader.js"
cp "$bindgen_dir/worker-simd.js" "$stage/worker-simd.js"
printf '%s' 'importScripts("./worker-simd.js");wasm_bindgen({ module_or_path: "./worker-simd_bg.wasm" });' >"$stage/worker-simd_loader.js"
cp "$bindgen_dir/worker-relaxed.js" "$stage/worker-relaxed.js"
printf '%s' 'importScripts("./worker-relaxed.js");wasm_bindgen({ module_or_path: "./worker-relaxed_bg.wasm" });' >"$stage/worker-relaxed_loader.js"
cp "$bindgen_dir/worker-threads.js" "$stage/worker-threads.js"
printf '%s' 'importScripts("./worker-threads.js");wasm_bindgen({ module_or_path: "./worker-threads_bg.wasm" });' >"$stage/worker-threads_loader.js"
# A CPU thread of that build (pool.rs starts one per further core and sends it the module, the shared memory and the
# pool thread to run); the flag tells the module's start function not to start another engine.
cat >"$stage/worker-threads_child.js" <<'JS'
self.aviaryPoolHelper = true;
importScripts("./worker-threads.js");
self.onmessage = async ({ data: [module, memory, work] }) => {
  self.onmessage = null;
  // Rust's threads get 2 MiB of stack natively; a pool thread gets as much here.
  await wasm_bindgen({ module_or_path: module, memory, thread_stack_size: 2 << 20 });
  self.postMessage("ready");
  wasm_bindgen.pool_thread_run(work);
};
JS

prune_opt_cache
[ -d "$bindgen_dir/snippets" ] && cp -r "$bindgen_dir/snippets" "$stage/"

css="style-$(hash_of app/style.css).css"
cp app/style.css "$stage/$css"

# index.html names the sources; dist/index.html names what was built from them.
grep -q 'href="app/style.css"' index.html && grep -q "'./app.js'" index.html && grep -q "'./app_bg.wasm'" index.html ||
  die "index.html must link app/style.css and import ./app.js with ./app_bg.wasm"
sed -e "s|href=\"app/style.css\"|href=\"$css\"|" \
    -e "s|'./app.js'|'./$app_js'|g; s|\"./app.js\"|\"./$app_js\"|g" \
    -e "s|'./app_bg.wasm'|'./$app_wasm'|g; s|\"./app_bg.wasm\"|\"./$app_wasm\"|g" \
    index.html >"$stage/index.html"

# The PWA's files (manifest, icons, the service worker's template), then the service worker stamped with the shell
# it precaches and a cache name from the shell's content.
cp -r public/. "$stage/"
scripts/stamp-sw.sh "$stage"

rm -rf dist.old
[ -d dist ] && mv dist dist.old
mv "$stage" dist
rm -rf dist.old
echo "built dist/ ($profile): $(du -sh dist | cut -f1)"
