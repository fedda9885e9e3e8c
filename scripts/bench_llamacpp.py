#!/usr/bin/env python3
"""The peer measurement for BENCHMARKS.md: llama.cpp (llama-cpp-python) on the same model, same machine, with the
same workload as `aviary bench` (a 512-token prompt prefilled in one batch, then 128 greedily decoded tokens).

Usage: .venv/bin/python scripts/bench_llamacpp.py MODEL.gguf [--threads N] [--lora ADAPTER.gguf] [--json]
"""
import argparse
import json
import resource
import time

import numpy as np

from llama_cpp import Llama


def last_argmax(llm):
    # Without logits_all, llama-cpp-python keeps no scores; read the context's last logits directly.
    row = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
    return int(row.argmax())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lora", help="a GGUF LoRA adapter applied at scale 1")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    t0 = time.perf_counter()
    llm = Llama(a.model, n_ctx=a.prompt_tokens + a.decode_tokens + 8, n_batch=a.prompt_tokens,
                n_ubatch=a.prompt_tokens, n_threads=a.threads, n_threads_batch=a.threads, verbose=False,
                **(dict(lora_path=a.lora, lora_scale=1.0) if a.lora else {}))
    load_s = time.perf_counter() - t0
    vocab = llm.n_vocab()
    # The same synthetic prompt as `aviary bench`.
    prompt = [1000 % vocab + (i * 7919) % (vocab // 2) for i in range(a.prompt_tokens)]

    t0 = time.perf_counter()
    llm.eval(prompt)
    prefill_s = time.perf_counter() - t0
    tok = last_argmax(llm)
    t0 = time.perf_counter()
    for _ in range(a.decode_tokens - 1):
        llm.eval([tok])
        tok = last_argmax(llm)
    decode_s = time.perf_counter() - t0
    out = {
        "model": a.model,
        "backend": f"llama.cpp (llama-cpp-python, {a.threads} threads)",
        "load_s": load_s,
        "prefill_tok_s": a.prompt_tokens / prefill_s,
        "decode_tok_s": (a.decode_tokens - 1) / decode_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:14} {v:.1f}" if isinstance(v, float) else f"{k:14} {v}")


if __name__ == "__main__":
    main()
