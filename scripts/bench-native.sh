#!/usr/bin/env bash
# The native CPU benchmark beside its peer: `aviary bench --backend cpu` and llama.cpp (llama-cpp-python, the same
# workload: a 512-token prompt prefilled in one batch, then 128 greedy tokens; 2 threads each) on SmolLM2-135M and
# Gemma-3-270M, alternating, ROUNDS times (default 3), plus decode after an 8-token prompt (decode at ~0 context)
# and after a 2048-token prompt (the long-context row). Prints the machine, the median and the spread of each figure, and our ratio to llama.cpp; writes
# target/bench-native.jsonl. Needs a quiet machine: every figure is memory- or compute-bound on both cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${AVIARY_CACHE:-$HOME/.cache/aviary}"
rounds="${ROUNDS:-3}"
py=.venv/bin/python
if ! "$py" -c 'import llama_cpp' 2>/dev/null; then
  echo "bench-native: llama.cpp's Python binding is missing; installing llama-cpp-python 0.3.36 into .venv (builds from source, ~10 min)" >&2
  [ -x "$py" ] || python3 -m venv .venv
  "$py" -m pip install --quiet llama-cpp-python==0.3.36 numpy
fi
cargo build --release -p aviary >&2
target_dir=$(cargo metadata --format-version 1 --no-deps | "$py" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
aviary="$target_dir/release/aviary"
out=target/bench-native.jsonl
mkdir -p target
: >"$out"

run() { # label model workload-args…
  local label=$1 model=$2; shift 2
  "$aviary" bench --model "$model" --backend cpu --json "$@" 2>/dev/null | sed "s/^{/{\"engine\":\"aviary cpu\",\"workload\":\"$label\",/" >>"$out"
  "$py" scripts/bench_llamacpp.py "$model" --json "$@" | sed "s/^{/{\"engine\":\"llama.cpp\",\"workload\":\"$label\",/" >>"$out"
}

for r in $(seq "$rounds"); do
  for m in SmolLM2-135M-Instruct.Q4_1 gemma-3-270m-q4_k_m; do
    echo "round $r/$rounds: $m" >&2
    run "8+128" "$cache/models/$m.gguf" --prompt-tokens 8
    run "512+128" "$cache/models/$m.gguf"
    run "2048+128" "$cache/models/$m.gguf" --prompt-tokens 2048
  done
done

"$py" - "$out" <<'PY'
import json, os, platform, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(f"machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; 2 threads each; {len(rows)} runs")
def stat(vals):
    return statistics.median(vals), min(vals), max(vals)
groups = {}
for r in rows:
    groups.setdefault((os.path.basename(r["model"]), r["workload"], r["engine"]), []).append(r)
print("| model | workload | engine | prefill tok/s median (spread) | decode tok/s median (spread) | peak RSS MiB |")
print("|---|---|---|---:|---:|---:|")
for (model, wl, eng), rs in sorted(groups.items()):
    p, d = stat([r["prefill_tok_s"] for r in rs]), stat([r["decode_tok_s"] for r in rs])
    rss = max(r["peak_rss_mb"] for r in rs)
    print(f"| {model} | {wl} | {eng} | {p[0]:.1f} ({p[1]:.1f}–{p[2]:.1f}) | {d[0]:.1f} ({d[1]:.1f}–{d[2]:.1f}) | {rss:.0f} |")
print()
for (model, wl, eng), rs in sorted(groups.items()):
    if eng != "aviary cpu":
        continue
    peer = groups.get((model, wl, "llama.cpp"))
    if not peer:
        continue
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    print(f"{model} {wl}: prefill {med(rs,'prefill_tok_s')/med(peer,'prefill_tok_s'):.2f}×, "
          f"decode {med(rs,'decode_tok_s')/med(peer,'decode_tok_s'):.2f}× llama.cpp")
print()
# The long-context aim: decode after 2048 positions against decode after 8 (and after 512), per engine.
for (model, wl, eng), rs in sorted(groups.items()):
    if wl != "2048+128":
        continue
    med = lambda k: statistics.median(r["decode_tok_s"] for r in groups.get((model, k, eng), []) or [{"decode_tok_s": float("nan")}])
    print(f"{model} {eng}: decode after 2048 positions {med('2048+128') / med('8+128'):.2f}× decode after 8, "
          f"{med('2048+128') / med('512+128'):.2f}× after 512")
PY
