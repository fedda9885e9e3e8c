//! Tiny random Llama, Gemma 2 and Gemma 3 checkpoints against HF transformers' eager float32 logits
//! (tests/fixtures/tiny, made by gen_tiny.py). Every weight, norms included, is random, so each convention —
//! norm +1, rope layout, window edge, query scale, softcaps, QK-norm, per-layer rope base — moves the logits.

mod common;
use common::*;

fn check(name: &str) {
    let dir = fixture(&format!("tiny/{name}"));
    let reference = read_json(&dir.join("reference.json"));
    let tokens = as_u32s(&reference["tokens"]);
    let want = as_matrix(&reference["logits"]);
    let m = load_cpu(&dir);
    let worst = assert_logits_close(&format!("{name} (safetensors, cpu)"), &m.logits(&tokens), &want, 1e-3);
    eprintln!("{name}: worst max|diff|/max|ref| = {worst:.2e}");
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

/// Prefill in one pass and token-by-token decode must agree: the KV cache, ring window and positions line up.
#[test]
fn incremental_decode_matches_batched_prefill() {
    for name in ["llama", "gemma2", "gemma3"] {
        let dir = fixture(&format!("tiny/{name}"));
        let reference = read_json(&dir.join("reference.json"));
        let tokens = as_u32s(&reference["tokens"]);
        let want = as_matrix(&reference["logits"]);
        let m = load_cpu(&dir);
        let mut cache = m.model.new_cache(&m.backend, tokens.len()).unwrap();
        let mut got = Vec::new();
        for &t in &tokens {
            let out = m.model.forward(&m.backend, &mut cache, &[t], false).unwrap();
            got.extend(futures::executor::block_on(engine::backend::Backend::to_host(&m.backend, &out)).unwrap());
        }
        assert_logits_close(&format!("{name} incremental"), &got, &want, 1e-3);
    }
}
