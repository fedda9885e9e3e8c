# Sourced by the scripts that drive the browser app in headless Chromium (e2e-test.sh, bench-web.sh); they define
# `die` first. `prepare_app SKIP` installs what is missing (scripts/setup.sh, the default model), builds dist/
# unless SKIP is 1 and it exists, and builds the CLI: it sets $model and $aviary. `serve_app DIR LOG TMP [MODELS]`
# serves DIR with the models (MODELS, default the directory of $model) under /models/ on a free port of 127.0.0.1:
# it sets $server (the pid) and $url.
# `with_scratch_dir` sets $tmp to a new directory, removed (and the server stopped) when the script exits.

prepare_app() {
  scripts/setup.sh
  local cache="${AVIARY_CACHE:-$HOME/.cache/aviary}"
  model="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
  [ -f "$model" ] || scripts/fetch-models.sh
  [ "$1" = 1 ] && [ -f dist/index.html ] || scripts/build-web.sh
  cargo build --release -p aviary
  local target_dir
  target_dir=$(cargo metadata --format-version 1 --no-deps | node -e 'console.log(JSON.parse(require("fs").readFileSync(0)).target_directory)')
  aviary="$target_dir/release/aviary"
}

with_scratch_dir() {
  tmp=$(mktemp -d)
  server=
  trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$tmp"' EXIT
}

serve_app() {
  local dir=$1 log=$2 tmp=$3 models=${4:-$(dirname "$model")}
  "$aviary" serve --dir "$dir" --model-dir "$models" --port 0 >"$tmp/serve.out" 2>"$log" &
  server=$!
  for _ in $(seq 100); do
    grep -q '^serving' "$tmp/serve.out" 2>/dev/null && break
    sleep 0.1
  done
  url=$(sed -n 's/^serving .* at \(http[^ ]*\)$/\1/p' "$tmp/serve.out" | head -1)
  [ -n "$url" ] || die "the server did not start: $(cat "$log")"
}
