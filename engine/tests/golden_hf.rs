//! Tiny random Llama, Gemma 2 and Gemma 3 checkpoints against HF transformers' eager float32 logits
//! (tests/fixtures/tiny, made by gen_tiny.py). Every weight, norms included, is random, so each convention —
//! norm +1, rope layout, window edge, query scale, softcaps, QK-norm, per-layer rope base — moves the logits.
// Native only: it reads files from disk, and wasm32 has no file system (the browser tests are tests/web_goldens.rs).
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use engine::backend::gpu::GpuOptions;
use engine::backend::Backend;

fn check(name: &str) {
    let dir = fixture(&format!("tiny/{name}"));
    compare(name, "cpu", &load_cpu(&dir));
    if let Some(m) = load_gpu(&dir) {
        compare(name, "gpu", &m);
    }
    // A binding limit far below the embedding's size: every weight is split across buffers.
    let small = GpuOptions {
        max_binding_bytes: Some(4096),
        ..f32_path()
    };
    if let Some(m) = load_gpu_with(&dir, small) {
        compare(name, "gpu, 4 KiB bindings", &m);
    }
    // Lavapipe gets the product kernels written for CPU-emulated adapters; real GPUs get the cooperative ones.
    let cooperative = GpuOptions {
        force_cooperative_products: true,
        ..f32_path()
    };
    if let Some(m) = load_gpu_with(&dir, cooperative) {
        compare(name, "gpu, cooperative products", &m);
    }
    // The f16 path (f16 KV cache and attention products) where the adapter has shader-f16.
    if let Some(m) = load_gpu_with(&dir, GpuOptions::default()).filter(|m| m.backend.uses_f16()) {
        compare_within(name, "gpu, f16", &m, F16_BOUND);
    }
}

/// What the f16 path meets on the tiny models (max |diff| / max |ref|).
const F16_BOUND: f32 = 5e-3;

fn compare<B: Backend>(name: &str, backend: &str, m: &Loaded<B>) {
    compare_within(name, backend, m, 1e-3);
}

fn compare_within<B: Backend>(name: &str, backend: &str, m: &Loaded<B>, tol: f32) {
    let reference = read_json(&fixture(&format!("tiny/{name}/reference.json")));
    let tokens = as_u32s(&reference["tokens"]);
    let want = as_matrix(&reference["logits"]);
    let what = format!("{name} (safetensors, {backend})");
    let worst = assert_logits_close(&what, &m.logits(&tokens), &want, tol);
    eprintln!("{what}: worst max|diff|/max|ref| = {worst:.2e}");
    let worst = assert_logits_close(
        &format!("{what} incremental"),
        &m.incremental_logits(&tokens),
        &want,
        tol,
    );
    eprintln!("{what} incremental: worst max|diff|/max|ref| = {worst:.2e}");
}

#[test]
fn llama_matches_transformers() {
    check("llama");
}

#[test]
fn gemma2_matches_transformers() {
    check("gemma2");
}

#[test]
fn gemma3_matches_transformers() {
    check("gemma3");
}
