#!/usr/bin/env bash
# LoRA training speed (BENCHMARKS.md, issue 15): `aviary train` on the CPU backend beside PyTorch + PEFT on the same
# CPU (scripts/bench_train_torch.py: the same GGUF dequantised to f32 by transformers, the same examples in the same
# batches), alternating, ROUNDS runs each; `aviary train --backend gpu` (lavapipe where there is no GPU) once a round;
# then the app's Train view in headless Chromium on WebGPU and on its CPU backend (tests/bench/train-bench.mjs). Also
# `aviary bench --backend cpu`'s peak RSS, the inference footprint the training's is compared with. Prints a table and
# writes target/bench-train.json.
#
# Workload: tests/bench/train-data.jsonl, 48 hand-written Alpaca rows (instruction, input, output; written once with a
# Python snippet that dumps them with json.dumps), 51–125 scored targets an example (mean 82) with SmolLM2's chat
# template and its default system prompt; chat style, no instruction masking, rank 8, alpha 16 on q, k, v, o, gate, up,
# down; AdamW lr 1e-3, weight decay 0.01, clipping 1.0; batch 4, MAX_LEN 512 (nothing is cut); seed 123, a tenth held
# out (43 training examples, 11 steps an epoch). Each run takes the first STEPS steps of epoch 0 (GPU_STEPS on
# lavapipe; WEB_STEPS and WEB_GPU_STEPS in the browser, at most STEPS); the first step is not timed (load, first touch,
# pipeline compilation); the others' scored target tokens over their seconds is tok/s. Lavapipe takes over half a
# minute a step and the browser's WebGPU (SwiftShader) about four minutes, hence their fewer steps; a full run takes
# about 20 minutes on the 2-core test machine. Hold `flock /tmp/aviary-bench.lock` around it on a shared machine.
#
#   ROUNDS (3), STEPS (5), GPU_STEPS (2), WEB_STEPS (5), WEB_GPU_STEPS (3), MAX_LEN (512), THREADS (2: rayon's and
#   torch's threads); WHOLE_TAPE_MIB (65536; 0 leaves it out): a second CPU run a round with this --tape-mib, so a
#   batch's whole tape is kept rather than each layer's forward run again in the backward pass (these batches' tape is
#   above the default budget, 256 MiB); BENCH_TRAIN_WEB=0 skips the browser, BENCH_TRAIN_GPU=0 the lavapipe runs,
#   WEB_BACKENDS (gpu,cpu) picks the browser's backends; BENCH_SKIP_BUILD=1 reuses dist/ when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bench-train: $*" >&2; exit 1; }
source scripts/app-under-test.sh
web=${BENCH_TRAIN_WEB:-1}
if [ "$web" = 0 ]; then
  # The native half needs no web build.
  cache="${AVIARY_CACHE:-$HOME/.cache/aviary}"
  model="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
  [ -f "$model" ] || scripts/fetch-models.sh
  cargo build --release -p aviary
  aviary="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/aviary"
else
  prepare_app "${BENCH_SKIP_BUILD:-0}"
fi
[ -x .venv/bin/python ] || die "no .venv: scripts/regen-fixtures.sh creates it (torch, transformers, peft, gguf)"

artifacts=target/bench-train-artifacts
mkdir -p "$artifacts"
with_scratch_dir
data=tests/bench/train-data.jsonl
rounds=${ROUNDS:-3} steps=${STEPS:-5} gpu_steps=${GPU_STEPS:-2} max_len=${MAX_LEN:-512}
web_steps=$(( ${WEB_STEPS:-5} < steps ? ${WEB_STEPS:-5} : steps )) web_gpu_steps=$(( ${WEB_GPU_STEPS:-3} < steps ? ${WEB_GPU_STEPS:-3} : steps ))
threads=${THREADS:-2} whole_tape=${WHOLE_TAPE_MIB:-65536}
export RAYON_NUM_THREADS=$threads
runs="$tmp/runs.jsonl"
: >"$runs"

busy=$(pgrep -c -x 'cargo|rustc|trunk' 2>/dev/null || true)
[ "$busy" = 0 ] || echo "bench-train: warning: $busy cargo/rustc/trunk processes are running; the numbers will be lower" >&2
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# The build measured: the commit, and whether the engine or the CLI differed from it when the run began.
rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- engine cli || echo '+changes')"

# `peak_rss FILE CMD…`: runs CMD and writes its peak resident set (the largest of it and its children) in MiB to FILE.
peak_rss() {
  python3 -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024))
sys.exit(rc)' "$@"
}

# `aviary_train BACKEND STEPS ROUND [LABEL ARGS…]`: one run, its figures appended to $runs.
aviary_train() {
  local backend=$1 k=$2 round=$3 label=${4:-$1} out="$tmp/train-${4:-$1}-$3"
  shift 3; [ $# = 0 ] || shift
  peak_rss "$out.rss" "$aviary" train --model "$model" --data "$data" --out "$out" --backend "$backend" --batch 4 \
    --max-len "$max_len" --rank 8 --alpha 16 --targets q,k,v,o,gate,up,down --lr 1e-3 --weight-decay 0.01 --clip 1 \
    --seed 123 --val-fraction 0.1 --stop-after "$k" "$@" 2>"$artifacts/aviary-$label-$round.log" \
    || die "aviary train --backend $backend $* failed: $(tail -5 "$artifacts/aviary-$label-$round.log")"
  python3 - "$out/metrics.jsonl" "$(cat "$out.rss")" "$label" "$round" "$(grep -m1 '^aviary: backend' "$artifacts/aviary-$label-$round.log" | cut -c17- || true)" "$*" >>"$runs" <<'EOF'
import json, sys
path, rss, backend, rnd, device, args = sys.argv[1:]
m = [json.loads(l) for l in open(path) if l.strip()]
secs = m[-1]["seconds"] - m[0]["seconds"]
toks = sum(x["tokens"] for x in m[1:])
print(json.dumps({"engine": "aviary " + backend.replace("-whole-tape", ", whole tape"), "round": int(rnd), "device": device, "args": args, "steps": len(m),
    "timed_steps": len(m) - 1, "first_step_s": m[0]["seconds"], "s_per_step": secs / (len(m) - 1), "tok_s": toks / secs,
    "peak_rss_mb": float(rss), "step_tokens": [x["tokens"] for x in m], "losses": [x["train_loss"] for x in m]}))
EOF
  cp "$out/metrics.jsonl" "$artifacts/metrics-$label-$round.jsonl"
}

torch_train() {
  local round=$1
  .venv/bin/python scripts/bench_train_torch.py "$model" "$data" --warmup 1 --steps $((steps - 1)) --batch 4 \
    --max-len "$max_len" --rank 8 --alpha 16 --threads "$threads" --json 2>"$artifacts/torch-$round.log" \
    | python3 -c 'import json, sys
r = json.load(sys.stdin); r["round"] = int(sys.argv[1]); r["step_tokens"] = [s["tokens"] for s in r["steps"]]
r["losses"] = [s["loss"] for s in r["steps"]]; r["first_step_s"] = r["steps"][0]["seconds"]; print(json.dumps(r))' "$round" >>"$runs" \
    || die "the PyTorch run failed: $(tail -5 "$artifacts/torch-$round.log")"
}

echo "bench-train: inference footprint (aviary bench --backend cpu)"
"$aviary" bench --model "$model" --backend cpu --json 2>"$artifacts/aviary-bench.log" >"$tmp/inference.json"
cat "$tmp/inference.json"
for round in $(seq "$rounds"); do
  echo "bench-train: round $round of $rounds: aviary cpu, PyTorch + PEFT$([ "${BENCH_TRAIN_GPU:-1}" = 0 ] || echo ', aviary gpu')"
  aviary_train cpu "$steps" "$round"
  tail -1 "$runs" | cut -c1-200
  if [ "$whole_tape" != 0 ]; then
    aviary_train cpu "$steps" "$round" cpu-whole-tape --tape-mib "$whole_tape"
    tail -1 "$runs" | cut -c1-200
  fi
  torch_train "$round"
  tail -1 "$runs" | cut -c1-200
  if [ "${BENCH_TRAIN_GPU:-1}" != 0 ]; then
    aviary_train gpu "$gpu_steps" "$round"
    tail -1 "$runs" | cut -c1-200
  fi
done

web_out="$tmp/web.jsonl"
: >"$web_out"
if [ "$web" != 0 ]; then
  serve_app dist "$artifacts/serve.log" "$tmp" "$(dirname "$model")"
  echo "bench-train: the app at $url"
  AVIARY_URL="$url" MODEL_PATH="models/$(basename "$model")" DATA="$PWD/$data" NATIVE_METRICS="$artifacts/metrics-cpu-1.jsonl" \
    STEPS="$web_steps" STEPS_GPU="$web_gpu_steps" MAX_LEN="$max_len" BACKENDS="${WEB_BACKENDS:-gpu,cpu}" OUT="$web_out" ARTIFACTS="$artifacts" \
    node tests/bench/train-bench.mjs || echo "bench-train: the browser part failed (above)" >&2
fi

python3 - "$runs" "$tmp/inference.json" "$web_out" target/bench-train.json "$busy" "$load_start" \
  "$(.venv/bin/python -c 'import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)' 2>/dev/null)" \
  "$rev" \
  "$( (/usr/bin/chromium --version || true) 2>/dev/null)" "$rounds" "$steps" "$gpu_steps" "$web_steps,$web_gpu_steps" "$max_len" "$threads" <<'EOF'
import json, os, statistics, sys, time
runs_p, inf_p, web_p, out_p, busy, load_start, versions, rev, chromium, rounds, steps, gpu_steps, web_steps, max_len, threads = sys.argv[1:]
runs = [json.loads(l) for l in open(runs_p) if l.strip()]
web = [json.loads(l) for l in open(web_p) if l.strip()]
inference = json.load(open(inf_p))
torch_v, transformers_v, peft_v = (versions.split() + ["?"] * 3)[:3]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")

# Every run of the native CPU and the peer must have scored the same tokens in the same steps.
ref = next((r["step_tokens"] for r in runs if r["engine"] == "aviary cpu"), None)
for r in runs:
    n = min(len(r["step_tokens"]), len(ref or []))
    if ref and r["step_tokens"][:n] != ref[:n]:
        print(f"bench-train: WARNING: {r['engine']} round {r['round']} scored {r['step_tokens']} tokens a step, aviary cpu {ref}")

def med(xs):
    return statistics.median(xs) if xs else float("nan")

summary = []
engines = []
for r in runs:
    if r["engine"] not in engines:
        engines.append(r["engine"])
peer = next((e for e in engines if e.startswith("pytorch")), None)
peer_tok = med([r["tok_s"] for r in runs if r["engine"] == peer]) if peer else float("nan")
for e in engines:
    rs = [r for r in runs if r["engine"] == e]
    tok = [r["tok_s"] for r in rs]
    summary.append({"engine": e, "runs": len(rs), "tok_s_median": med(tok), "tok_s_min": min(tok), "tok_s_max": max(tok),
                    "s_per_step_median": med([r["s_per_step"] for r in rs]), "timed_steps": rs[0]["timed_steps"],
                    "peak_rss_mb_median": med([r["peak_rss_mb"] for r in rs]), "vs_pytorch": med(tok) / peer_tok})
for w in web:
    if "tok_s" in w:
        summary.append({"engine": w["engine"], "runs": 1, "tok_s_median": w["tok_s"], "tok_s_min": w["tok_s"],
                        "tok_s_max": w["tok_s"], "s_per_step_median": w["s_per_step"], "timed_steps": w["timed_steps"],
                        "peak_rss_mb_median": w["peak_pss_mb"], "vs_pytorch": w["tok_s"] / peer_tok, "memory": "PSS, all Chromium processes"})

report = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "build_processes_at_start": int(busy or 0),
                "loadavg_start": load_start, "loadavg_end": open("/proc/loadavg").read().split()[:3]},
    "versions": {"aviary": rev, "torch": torch_v, "transformers": transformers_v, "peft": peft_v, "chromium": chromium},
    "settings": {"data": "tests/bench/train-data.jsonl", "batch": 4, "max_len": int(max_len), "rank": 8, "alpha": 16,
                 "targets": "q,k,v,o,gate,up,down", "threads": int(threads), "rounds": int(rounds), "steps": int(steps),
                 "gpu_steps": int(gpu_steps), "web_steps": dict(zip(["cpu", "webgpu"], map(int, web_steps.split(","))))},
    "inference": inference, "summary": summary, "runs": runs, "web": web,
}
json.dump(report, open(out_p, "w"), indent=2)

inf_rss = inference.get("peak_rss_mb")
print(f"\nLoRA training, SmolLM2-135M-Instruct Q4_1, batch 4, rank 8, {threads} threads; first step of each run not timed")
print("| engine | runs | scored tok/s, median (spread) | s/step | timed steps | peak RSS MiB | vs PyTorch | vs inference RSS |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for s in summary:
    spread = f" ({s['tok_s_min']:.1f}–{s['tok_s_max']:.1f})" if s["runs"] > 1 else ""
    ratio = f"{s['peak_rss_mb_median'] / inf_rss:.2f}×" if inf_rss and s["engine"].startswith("aviary cpu") else ""
    print(f"| {s['engine']} | {s['runs']} | {s['tok_s_median']:.1f}{spread} | {s['s_per_step_median']:.2f} | {s['timed_steps']} "
          f"| {s['peak_rss_mb_median']:.0f}{' (PSS)' if 'memory' in s else ''} | {s['vs_pytorch']:.2f}× | {ratio} |")
print(f"\ninference footprint: aviary bench --backend cpu peak RSS {inf_rss:.0f} MiB "
      f"(prefill {inference.get('prefill_tok_s', float('nan')):.1f}, decode {inference.get('decode_tok_s', float('nan')):.1f} tok/s)")
for w in web:
    if "error" in w:
        print(f"{w['engine']}: FAILED: {w['error']}")
    else:
        print(f"{w['engine']}: {w['status']}; losses {[round(x, 4) for x in w['losses']]} (native cpu {[round(x, 4) for x in w['native_losses']]})")
print(f"versions: aviary {rev}, torch {torch_v}, transformers {transformers_v}, peft {peft_v}; {chromium}")
print(f"machine: {cpu}, {os.cpu_count()} cores; build processes at the start: {busy}; load average {load_start} → {' '.join(report['machine']['loadavg_end'])}")
print(f"JSON: {out_p}")
EOF
