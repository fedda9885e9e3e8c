#!/usr/bin/env bash
# Fine-tuning demonstration (issue 15; BENCHMARKS.md): SmolLM2-135M-Instruct learns a behaviour it does not have —
# ending every answer with a fixed sign-off line — from at most 128 examples it generated itself, on the CPU.
#   1. `aviary magpie` on the base model writes instructions and short greedy answers (ShareGPT JSONL); a python3 step
#      (standard library only) keeps well-formed rows — an instruction that ends as a sentence, not repetitive, not a
#      duplicate, not one of the held-out prompts — cuts each answer that stopped at the token limit back to its last
#      complete sentence (dropping it when little is left), appends the sign-off on a line of its own, and keeps the
#      first CAP rows in Magpie's own format, which `aviary train --data` reads as it is.
#   2. `aviary train --backend cpu` fits a LoRA adapter on them (the model's chat template, instructions masked).
#   3. Greedy replies (`aviary generate --backend cpu --json`, temperature 0) of the base and of the base with the
#      adapter (`--lora DIR/adapter.gguf`) to 16 fixed held-out prompts written here (none of them is in the training
#      data): a reply shows the behaviour when its text ends with the sign-off.
# Prints a summary and writes target/demo-finetune.json (the replies and the work files are in target/demo-finetune/);
# exits non-zero when fewer than MIN_RATE of the tuned replies or any base reply shows the behaviour.
# Knobs (environment variables, defaults in brackets):
#   MODEL [$AVIARY_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf]   SIGNOFF ["— Answered by Aviary."]
#   Magpie: N rows to make [240], SEED [1], MAGPIE_BATCH [16], INS_MAX_TOKENS [40], ANSWER_MAX_TOKENS [80]
#   Data: CAP examples at most [128], MIN_EXAMPLES below which the demo stops [64]
#   Training: RANK [8], ALPHA [16], LR [1e-3], EPOCHS [2], BATCH [4], MAX_LEN [256], VAL_FRACTION [0.0625],
#             TRAIN_SEED [123]
#   Evaluation: EVAL_MAX_TOKENS per greedy reply [512: the base ends 12 of its 16 replies
#               within it; the other 4 repeat themselves greedily to any length], MIN_RATE for the tuned model [0.8]
#   AVIARY: an aviary binary to use instead of building one (`cargo build --release -p aviary`).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "demo-finetune: $*" >&2; exit 1; }
cache="${AVIARY_CACHE:-$HOME/.cache/aviary}"
model=${MODEL:-$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || die "no model at $model (make models fetches it)"
if [ -z "${AVIARY:-}" ]; then
  cargo build --release -p aviary
  AVIARY="${CARGO_TARGET_DIR:-$cache/target}/release/aviary"
fi
[ -x "$AVIARY" ] || die "no aviary binary at $AVIARY"

export SIGNOFF=${SIGNOFF:-— Answered by Aviary.}
n=${N:-240} seed=${SEED:-1} magpie_batch=${MAGPIE_BATCH:-16}
ins_max=${INS_MAX_TOKENS:-40} answer_max=${ANSWER_MAX_TOKENS:-80}
export CAP=${CAP:-128} MIN_EXAMPLES=${MIN_EXAMPLES:-64}
rank=${RANK:-8} alpha=${ALPHA:-16} lr=${LR:-1e-3} epochs=${EPOCHS:-2} batch=${BATCH:-4} max_len=${MAX_LEN:-256}
val_fraction=${VAL_FRACTION:-0.0625} train_seed=${TRAIN_SEED:-123}
export EVAL_MAX_TOKENS=${EVAL_MAX_TOKENS:-512} MIN_RATE=${MIN_RATE:-0.8}

work=target/demo-finetune
rm -rf "$work"
mkdir -p "$work"
export WORK=$work MODEL_PATH=$model AVIARY

# The held-out prompts: everyday questions of the kind Magpie writes, none of them in the training data (step 1 drops
# a generated instruction equal to one of them).
cat >"$work/held-out.txt" <<'EOF'
What are three tips for getting better sleep?
Explain what photosynthesis is in simple terms.
How do I make a cup of green tea?
What is the difference between weather and climate?
Give me a short packing list for a weekend hiking trip.
Why is the sky blue?
How can I stay focused while studying at home?
What does a web browser do?
Suggest a name for a small bakery.
What are the benefits of drinking water?
How do I write a polite email asking for a deadline extension?
What is a prime number?
Recommend a good habit to start in the morning.
How does a bicycle stay upright?
What should I consider when adopting a cat?
Summarize the plot of Cinderella in two sentences.
EOF

start=$(date +%s.%N)
echo "demo-finetune: 1/3 magpie: $n rows (instructions ≤ $ins_max tokens, answers ≤ $answer_max) on $(basename "$model")" >&2
"$AVIARY" magpie --model "$model" --backend cpu --n "$n" --seed "$seed" --batch "$magpie_batch" --stop-at-newline \
  --sanitize --ins-max-tokens "$ins_max" --max-tokens "$answer_max" --out "$work/magpie.jsonl"
magpie_done=$(date +%s.%N)

python3 - <<'EOF'
import json, os, re
work, signoff = os.environ["WORK"], os.environ["SIGNOFF"]
cap, min_examples = int(os.environ["CAP"]), int(os.environ["MIN_EXAMPLES"])
held = {l.strip().lower() for l in open(f"{work}/held-out.txt") if l.strip()}
# A sentence's end: a letter (or a closing bracket, quote or Markdown star) then . ! or ?, then a space or the end;
# "1." of a list and "$10." are not taken for one.
sentence_end = re.compile(r"""[A-Za-z)\]"'*][.!?]["')\]*]*(?=\s|$)""")

def words(s):
    return re.findall(r"[A-Za-z']+", s.lower())

def repetitive(s):
    w = words(s)
    tri = list(zip(w, w[1:], w[2:]))
    return bool(tri) and len(set(tri)) / len(tri) < 0.7

counts = dict(rows_read=0, instruction_unfinished=0, held_out=0, duplicate=0, answers_cut_back=0, too_short=0,
              repetitive=0, kept=0)
seen, kept = set(), []
for line in open(f"{work}/magpie.jsonl"):
    row = json.loads(line)
    counts["rows_read"] += 1
    ins, ans = row["instruction"].strip(), row["response"].strip()
    if not re.search(r"[.?!]['\")]?$", ins) or len(words(ins)) < 3:
        counts["instruction_unfinished"] += 1
        continue
    if ins.lower() in held:
        counts["held_out"] += 1
        continue
    if ins.lower() in seen:
        counts["duplicate"] += 1
        continue
    ends = list(sentence_end.finditer(ans))
    cut = ans[: ends[-1].end()].rstrip() if ends else ""
    if cut != ans:
        counts["answers_cut_back"] += 1
    if len(words(cut)) < 15:
        counts["too_short"] += 1
        continue
    if repetitive(cut):
        counts["repetitive"] += 1
        continue
    if signoff in cut:
        raise SystemExit(f"demo-finetune: the base model wrote the sign-off itself: {cut!r}")
    seen.add(ins.lower())
    answer = f"{cut}\n\n{signoff}"
    row["response"] = answer
    for turn in row["conversations"]:
        if turn["from"] == "gpt":
            turn["value"] = answer
    kept.append(row)
    if len(kept) == cap:
        break
counts["kept"] = len(kept)
with open(f"{work}/train.jsonl", "w") as f:
    for row in kept:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
json.dump(counts, open(f"{work}/data-counts.json", "w"))
print("demo-finetune: data:", ", ".join(f"{k} {v}" for k, v in counts.items()))
if len(kept) < min_examples:
    raise SystemExit(f"demo-finetune: only {len(kept)} usable examples (MIN_EXAMPLES {min_examples}): raise N")
EOF

examples=$(wc -l <"$work/train.jsonl")
echo "demo-finetune: 2/3 train: $examples examples, rank $rank, alpha $alpha, lr $lr, $epochs epoch(s), batch $batch" >&2
train_start=$(date +%s.%N)
"$AVIARY" train --model "$model" --backend cpu --data "$work/train.jsonl" --out "$work/run" --mask-instructions \
  --rank "$rank" --alpha "$alpha" --lr "$lr" --epochs "$epochs" --batch "$batch" --max-len "$max_len" \
  --val-fraction "$val_fraction" --seed "$train_seed" --checkpoint-every 100000 2>&1 | tee "$work/train.log"
train_done=$(date +%s.%N)
[ -f "$work/run/adapter.gguf" ] || die "training wrote no adapter"

echo "demo-finetune: 3/3 greedy replies to 16 held-out prompts, base and tuned" >&2
export START=$start MAGPIE_DONE=$magpie_done TRAIN_START=$train_start TRAIN_DONE=$train_done
export SETTINGS="{\"n\": $n, \"seed\": $seed, \"magpie_batch\": $magpie_batch, \"ins_max_tokens\": $ins_max,
  \"answer_max_tokens\": $answer_max, \"cap\": $CAP, \"rank\": $rank, \"alpha\": $alpha, \"lr\": $lr,
  \"epochs\": $epochs, \"batch\": $batch, \"max_len\": $max_len, \"val_fraction\": $val_fraction,
  \"train_seed\": $train_seed, \"mask_instructions\": true, \"targets\": \"q,k,v,o,gate,up,down\",
  \"eval_max_tokens\": $EVAL_MAX_TOKENS}"
python3 - <<'EOF'
import json, os, re, subprocess, sys, time
work, signoff, aviary, model = os.environ["WORK"], os.environ["SIGNOFF"], os.environ["AVIARY"], os.environ["MODEL_PATH"]
max_tokens, min_rate = int(os.environ["EVAL_MAX_TOKENS"]), float(os.environ["MIN_RATE"])
prompts = [l.strip() for l in open(f"{work}/held-out.txt") if l.strip()]
adapter = f"{work}/run/adapter.gguf"

def reply(prompt, lora):
    cmd = [aviary, "generate", "--model", model, "--backend", "cpu", "--temperature", "0",
           "--max-tokens", str(max_tokens), "--prompt", prompt, "--json"]
    if lora:
        cmd += ["--lora", lora]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    text = out["text"]
    return {"prompt": prompt, "text": text, "tokens": len(out["tokens"]),
            "ended": len(out["tokens"]) < max_tokens, "signed": text.rstrip().endswith(signoff), "mentions": signoff in text}

eval_start = time.time()
sides = {}
for name, lora in (("base", None), ("tuned", adapter)):
    sides[name] = [reply(p, lora) for p in prompts]
    print(f"demo-finetune: {name}: " + "".join("✓" if r["signed"] else "·" for r in sides[name]), file=sys.stderr)
eval_seconds = time.time() - eval_start

metrics = [json.loads(l) for l in open(f"{work}/run/metrics.jsonl")]
steps = [m for m in metrics if "train_loss" in m]
scored = sum(m["tokens"] for m in steps)
step_seconds = steps[-1]["seconds"]
val = [m["val_loss"] for m in metrics if "val_loss" in m]
seconds = lambda a, b: float(os.environ[b]) - float(os.environ[a])
# "aviary: 120 training and 8 validation examples, 30 steps (30 per epoch)"
m = re.search(r"(\d+) training and (\d+) validation examples", open(f"{work}/train.log").read())
trained_on, validation = (int(m[1]), int(m[2])) if m else (None, None)
rate = {k: sum(r["signed"] for r in v) / len(v) for k, v in sides.items()}
sample = next((r for r in sides["tuned"] if r["signed"]), sides["tuned"][0])
summary = {
    "model": os.path.basename(model),
    "behaviour": f"the reply ends with the line {signoff!r}",
    "settings": json.loads(os.environ["SETTINGS"]),
    "data": json.load(open(f"{work}/data-counts.json")),
    "examples": sum(1 for _ in open(f"{work}/train.jsonl")),
    "steps": len(steps),
    "first_train_loss": steps[0]["train_loss"],
    "last_train_loss": steps[-1]["train_loss"],
    "val_loss": val[-1] if val else None,
    "trained_on": trained_on,
    "validation_examples": validation,
    "magpie_seconds": round(seconds("START", "MAGPIE_DONE"), 1),
    "train_seconds": round(seconds("TRAIN_START", "TRAIN_DONE"), 1),
    "train_step_seconds": round(step_seconds, 1),
    "scored_tokens": scored,
    "scored_tokens_per_second": round(scored / step_seconds, 1),
    "eval_seconds": round(eval_seconds, 1),
    "total_seconds": round(time.time() - float(os.environ["START"]), 1),
    "base_rate": rate["base"],
    "tuned_rate": rate["tuned"],
    "base_mentions": sum(r["mentions"] for r in sides["base"]),
    "base_ended_naturally": sum(r["ended"] for r in sides["base"]),
    "tuned_ended_naturally": sum(r["ended"] for r in sides["tuned"]),
    "sample": {"prompt": sample["prompt"], "tuned": sample["text"],
               "base": sides["base"][prompts.index(sample["prompt"])]["text"]},
    "replies": sides,
}
json.dump(summary, open("target/demo-finetune.json", "w"), ensure_ascii=False, indent=1)
s = summary
print(f"""
demo-finetune: {s['model']} learns to end its replies with {signoff!r}
  examples           {s['examples']} ({s['trained_on']} trained on, {s['validation_examples']} for validation; kept from the first {s['data']['rows_read']} Magpie rows, made in {s['magpie_seconds']} s)
  training           {s['steps']} steps, {s['train_seconds']} s (steps alone {s['train_step_seconds']} s), {s['scored_tokens_per_second']} scored tokens/s
  loss               {s['first_train_loss']:.3f} -> {s['last_train_loss']:.3f} (validation {s['val_loss'] if s['val_loss'] is None else round(s['val_loss'], 3)})
  base rate          {sum(r['signed'] for r in sides['base'])}/16 = {rate['base']:.0%} (the sign-off anywhere in {s['base_mentions']}/16; {s['base_ended_naturally']}/16 replies ended before {max_tokens} tokens)
  tuned rate         {sum(r['signed'] for r in sides['tuned'])}/16 = {rate['tuned']:.0%} ({s['tuned_ended_naturally']}/16 ended before {max_tokens} tokens)
  replies            {s['eval_seconds']} s; total {s['total_seconds']} s; details in target/demo-finetune.json
  sample             {sample['prompt']!r} ->
{sample['text']}""")
if rate["tuned"] < min_rate or rate["base"] > 0:
    raise SystemExit(f"demo-finetune: FAILED (tuned {rate['tuned']:.0%} < {min_rate:.0%} or base {rate['base']:.0%} > 0%)")
print("demo-finetune: passed")
EOF
