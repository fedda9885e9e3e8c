#!/usr/bin/env python3
"""The peer measurement for `make bench-train` (BENCHMARKS.md): LoRA training of the same model with PyTorch + PEFT on
the same CPU, with what `aviary train --style chat` does (engine/src/train/): the same examples in the same batches.

- The model: the GGUF file itself, dequantised to f32 by transformers' GGUF loading (tokenizer and chat template
  from the same file).
- The examples: each row's instruction (with its input after a blank line, as Aviary's JSONL import joins them) as
  one user turn in the model's chat template with the generation prompt, the response, and Aviary's end token (the
  chat format's end of turn among the tokenizer's end ids — for SmolLM2 <|im_end|> — else its eos); targets are the inputs shifted by one, the end token the last target, no
  instruction masking; cut to --max-len.
- The batches: Aviary's seeded split (--val-fraction held out) and its epoch-0 shuffle, --batch examples a step, so
  step k here sees the examples of Aviary's step k. Aviary stacks a batch's sequences without padding; here they are
  padded as ch. 7 of Build a Large Language Model From Scratch does (with the end token; targets -100 after the first
  end token), with no attention mask (causal attention never lets a real token see the padding after it).
- LoRA: PEFT's LoraConfig(r, lora_alpha, the seven projections, dropout 0); AdamW (lr, weight decay 0.01, torch's
  defaults otherwise) with Aviary's schedule (appendix D: warm-up from lr / 10, cosine decay to lr / 10) and
  clip_grad_norm_ 1.0.

Measured: --warmup steps first (not timed), then --steps timed steps: seconds a step, scored target tokens a second,
the process's peak RSS (ru_maxrss: the load's dequantisation included) and the peak from the first step on (VmHWM
reset through /proc/self/clear_refs where the kernel allows it).

Usage: .venv/bin/python scripts/bench_train_torch.py MODEL.gguf DATA.jsonl [--steps N] [--warmup 1] [--batch 4]
       [--max-len 512] [--rank 8] [--alpha 16] [--threads 2] [--json]
"""
import argparse
import json
import math
import os
import resource
import time

import torch
import torch.nn.functional as F

MASK64 = (1 << 64) - 1
# engine/src/tokenizer/mod.rs END_OF_TURN_TEXTS
END_OF_TURN_TEXTS = ["<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                     "<|end_of_text|>", "<end_of_utterance>"]
# engine/src/train/data.rs TURN_ENDS
TURN_ENDS = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|eom_id|>"]


def shuffle(items, seed):
    """engine/src/train/data.rs `shuffle`: Fisher–Yates with xorshift64, seeded the same way."""
    s = ((seed * 0x9E3779B97F4A7C15) & MASK64) ^ 0xD1B54A32D192ED03
    for i in range(len(items) - 1, 0, -1):
        s ^= (s << 13) & MASK64
        s ^= s >> 7
        s ^= (s << 17) & MASK64
        j = s % (i + 1)
        items[i], items[j] = items[j], items[i]


def split(n, fraction, seed):
    """engine/src/train/data.rs `split`."""
    order = list(range(n))
    shuffle(order, seed)
    val = min(max(math.floor(n * fraction + 0.5), 1), n - 1) if fraction > 0 and n >= 2 else 0
    return order[: n - val], order[n - val:]


def records(path):
    """Alpaca rows as Aviary's import reads them (dataset/src/formats.rs): instruction, then "\\n\\n" + input."""
    out = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            ins = r["instruction"]
            if r.get("input", "").strip():
                ins += "\n\n" + r["input"]
            out.append((ins, r["output"]))
    return out


def end_token(tok):
    """engine/src/train/data.rs `end_token` for the chat style: the first chat end-of-turn marker among the
    tokenizer's end ids, else its eos."""
    ids = []
    vocab = tok.get_vocab()
    special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    for i in [tok.eos_token_id] + [vocab.get(t) for t in END_OF_TURN_TEXTS if vocab.get(t) in special]:
        if i is not None and i not in ids:
            ids.append(i)
    for t in TURN_ENDS:
        if vocab.get(t) in ids:
            return vocab[t]
    return ids[0]


def encode(tok, end, instruction, response, max_len):
    prompt = tok.apply_chat_template([{"role": "user", "content": instruction}], add_generation_prompt=True,
                                     tokenize=False)
    ids = tok.encode(prompt, add_special_tokens=False) + tok.encode(response, add_special_tokens=False) + [end]
    return ids[:-1][:max_len], ids[1:][:max_len]


def collate(batch, pad):
    """ch. 7's collate with the targets already shifted: pad inputs with the end token, targets with -100."""
    n = max(len(i) for i, _ in batch)
    inputs = torch.tensor([i + [pad] * (n - len(i)) for i, _ in batch])
    targets = torch.tensor([t + [-100] * (n - len(t)) for _, t in batch])
    return inputs, targets


def rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--steps", type=int, default=4, help="timed steps after the warm-up")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import peft
    import transformers

    t0 = time.perf_counter()
    folder, name = os.path.split(os.path.abspath(a.model))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(
        r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    model.train()
    load_s = time.perf_counter() - t0
    rss_after_load = rss_mb("VmRSS")
    peak_at_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    end = end_token(tok)
    examples = [encode(tok, end, i, r, a.max_len) for i, r in records(a.data)]
    train_idx, _ = split(len(examples), a.val_fraction, a.seed)
    train = [examples[i] for i in train_idx]
    order = list(range(len(train)))
    shuffle(order, a.seed)  # epoch 0
    steps_per_epoch = math.ceil(len(train) / a.batch)
    total = a.warmup + a.steps
    if total > steps_per_epoch:
        raise SystemExit(f"{total} steps asked; one epoch of {len(train)} examples has {steps_per_epoch}")
    batches = [[train[i] for i in order[s * a.batch:(s + 1) * a.batch]] for s in range(total)]

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01)
    warm = min(2, steps_per_epoch)  # aviary train --warmup 2 over one epoch

    def lr_at(step):
        peak, low = a.lr, a.lr / 10
        if step < warm:
            return low + step * (peak - low) / warm
        progress = min((step - warm) / max(steps_per_epoch - warm, 1), 1.0)
        return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * progress))

    # From here on VmHWM is the training's own peak (writing 5 to clear_refs resets it; Linux 4.0+).
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False

    steps = []
    for s, batch in enumerate(batches):
        inputs, targets = collate(batch, end)
        t = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(s)
        logits = model(input_ids=inputs).logits
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps.append({"step": s + 1, "seconds": time.perf_counter() - t, "tokens": int((targets != -100).sum()),
                      "padded_tokens": int(targets.numel()), "loss": float(loss), "grad_norm": float(norm)})
        if not a.json:
            print(f"step {s + 1}: {steps[-1]['seconds']:.2f} s, {steps[-1]['tokens']} tokens, loss {float(loss):.4f}",
                  flush=True)
    timed = steps[a.warmup:]
    secs = sum(x["seconds"] for x in timed)
    toks = sum(x["tokens"] for x in timed)
    out = {
        "engine": "pytorch + peft",
        "versions": {"torch": torch.__version__, "peft": peft.__version__, "transformers": transformers.__version__},
        "threads": a.threads,
        "model": a.model,
        "batch": a.batch, "max_len": a.max_len, "rank": a.rank, "alpha": a.alpha,
        "end_token": end,
        "load_s": load_s,
        "timed_steps": len(timed),
        "s_per_step": secs / len(timed),
        "tok_s": toks / secs,
        "padded_tok_s": sum(x["padded_tokens"] for x in timed) / secs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_load_mb": peak_at_load,
        "rss_after_load_mb": rss_after_load,
        "train_peak_rss_mb": rss_mb("VmHWM") if hwm_reset else None,
        "steps": steps,
    }
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            if k != "steps":
                print(f"{k:18} {v:.2f}" if isinstance(v, float) else f"{k:18} {v}")


if __name__ == "__main__":
    main()
