# Two entry points (see README): `make run` and `make test`. Both install what is missing and are quick when
# everything is already there.
SHELL := /bin/bash
export AVIARY_CACHE ?= $(HOME)/.cache/aviary
# One cargo target directory for every clone: a fresh clone rebuilds only what differs from the last build (cargo's
# fingerprints decide, so a cached build never stands in for changed code). Set CARGO_TARGET_DIR to use another.
export CARGO_TARGET_DIR ?= $(AVIARY_CACHE)/target
MODEL ?= $(AVIARY_CACHE)/models/SmolLM2-135M-Instruct.Q4_1.gguf
PORT ?= 8080

.PHONY: run chat test setup models reference fuzz bench bench-web bench-wasm-ops bench-magpie bench-train demo-finetune web-test e2e-test web-build test-gpu-models

setup:
	@scripts/setup.sh

models:
	@scripts/fetch-models.sh

reference:
	@scripts/fetch-reference.sh

# The browser app, built for release, served at http://127.0.0.1:$(PORT) with the models under /models/.
run: setup models web-build
	cargo run --release -p aviary -- serve --dir dist --model-dir "$(AVIARY_CACHE)/models" --port $(PORT)

web-build:
	@scripts/build-web.sh

# Chat in the terminal instead.
chat: setup models
	cargo run --release -p aviary -- chat --model "$(MODEL)" --temperature 0.7 --top-p 0.9

# Everything, stage by stage, with the time each stage took at the end (scripts/test.sh).
test:
	@scripts/test.sh

# Greedy decoding of the real models on the default GPU path against the CPU backend (slow on lavapipe; make test
# runs the exact path's greedy decoding and logits, and the teacher-forced agreement with llama.cpp).
test-gpu-models: setup models
	cargo test --release -p engine --test real_llamacpp -- --ignored --nocapture

# The wasm build on WebGPU in headless Chromium (SwiftShader) against the tiny goldens; installs Chromium and
# wasm-bindgen-test-runner when missing.
web-test:
	@scripts/web-test.sh

# The browser app end to end in headless Chromium (WebGPU on SwiftShader): load, stream, compare with the CLI, stop.
e2e-test: setup models
	@scripts/e2e-test.sh

# The fuzzers keep their own target directory (fuzz/target): sanitizer builds share nothing with the rest. A minute
# each: the GGUF and safetensors header readers, and the share-link decoder (cargo-fuzz is installed when missing).
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && env -u CARGO_TARGET_DIR RUSTC_BOOTSTRAP=1 cargo fuzz run gguf_header -- -max_total_time=60
	cd fuzz && env -u CARGO_TARGET_DIR RUSTC_BOOTSTRAP=1 cargo fuzz run safetensors_header -- -max_total_time=60
	cd fuzz && env -u CARGO_TARGET_DIR RUSTC_BOOTSTRAP=1 cargo fuzz run share_link -- -max_total_time=60

bench: setup models
	@scripts/bench-native.sh
	cargo run --release -p aviary -- bench --model "$(AVIARY_CACHE)/models/SmolLM2-135M-Instruct.Q4_1.gguf" --backend gpu
	cargo run --release -p aviary -- bench --model "$(AVIARY_CACHE)/models/gemma-3-270m-q4_k_m.gguf" --backend gpu

# The browser app in headless Chromium (WebGPU on SwiftShader, and the CPU path) beside wllama, same model and
# question: load (cold, cached), first token, prefill and decode tok/s; writes target/bench-web.json.
bench-web: setup models
	@scripts/bench-web.sh

# The browser's CPU path (wasm SIMD128) op by op in node: each decode product and attention step per token, and a
# model load split into its parts; seconds, for finding where bench-web's CPU time goes.
bench-wasm-ops: setup models
	@scripts/bench-wasm-ops.sh

# Magpie samples/min and tokens/s at B = 1, 4, 8, 16: natively (CPU, GPU) and in the browser (WebGPU, CPU), one run;
# writes target/bench-magpie.jsonl.
bench-magpie: setup models
	@scripts/bench-magpie.sh

# Issue 15's demonstration: SmolLM2-135M-Instruct learns to end every reply with a sign-off line from ≤ 128 examples
# it made with `aviary magpie`, trained on the CPU; greedy replies to 16 held-out prompts, base vs tuned (≥ 80% vs 0%).
# About 8 minutes on 2 cores; writes target/demo-finetune.json (scripts/demo-finetune.sh lists its knobs).
demo-finetune: setup models
	@scripts/demo-finetune.sh

# LoRA training tokens/s on SmolLM2: `aviary train` on the CPU beside PyTorch + PEFT (same CPU, same batches,
# alternating, 3 runs each), on the GPU backend, and the app's Train view in the browser (WebGPU, CPU); peak memory
# beside the inference footprint; writes target/bench-train.json (BENCH_TRAIN_WEB=0 skips the browser).
bench-train: setup models
	@scripts/bench-train.sh
