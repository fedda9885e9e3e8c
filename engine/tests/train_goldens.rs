//! LoRA training against PyTorch + PEFT (tests/fixtures/train, made by gen_train.py): on the tiny Llama, Gemma 2
//! and Gemma 3 (windows shorter than the sequence, softcaps that bite, QK-norm), a random adapter (A and B non-zero)
//! on all seven projections and ch. 7's padded batch of 3 sequences with one instruction masked — the loss, the
//! gradient of every LoRA tensor, and every tensor after 3 AdamW steps, plain and with clipping and appendix D's
//! schedule. The Q8_0 GGUF twins against the same computation on their dequantised weights (q8_0/): training
//! multiplies f32 activations by weights dequantised inside the product, with no activation rounding, so the twin's
//! numbers carry no quantization error of the engine's own and are held to the same bounds. Rebuilding each layer's
//! tape in the backward pass gives the same bits; stacking the sequences one at a time, the same numbers.
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use engine::config::RopeLayout;
use engine::lora::{LoraFile, Target};
use engine::train::optim::{clip_grad_norm, AdamW, Moments, Schedule};
use engine::train::{loss_and_grads, loss_and_grads_within, DeviceLora, Example, TrainBackend};
use serde_json::Value;
use std::collections::HashMap;

const LOSS_REL: f64 = 1e-4;
const TENSOR_REL: f32 = 1e-3;

fn batch(b: &Value) -> Vec<Example> {
    let rows = |k: &str| b[k].as_array().expect(k).iter().map(|r| r.as_array().expect("row").clone()).collect::<Vec<_>>();
    rows("input_ids")
        .iter()
        .zip(rows("targets"))
        .map(|(inputs, targets)| Example {
            inputs: inputs.iter().map(|v| v.as_u64().expect("id") as u32).collect(),
            targets: targets.iter().map(|v| v.as_i64().filter(|&t| t >= 0).map(|t| t as u32)).collect(),
        })
        .collect()
}

fn peft_key(layer: usize, t: Target, half: &str) -> String {
    format!("base_model.model.model.layers.{layer}.{}.lora_{half}.weight", t.hf_path())
}

fn references(path: &std::path::Path) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).expect("reference.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (name, values)
        })
        .collect()
}

/// Every module's A and B against `prefix.<PEFT key>`; returns the worst max|diff| / max|ref|.
fn compare(what: &str, got: &LoraFile, refs: &HashMap<String, Vec<f32>>, prefix: &str) -> f32 {
    let mut worst = 0f32;
    assert!(!got.modules.is_empty());
    for (&(layer, t), m) in &got.modules {
        for (half, values) in [("A", &m.a), ("B", &m.b)] {
            let key = format!("{prefix}.{}", peft_key(layer, t, half));
            let want = refs.get(&key).unwrap_or_else(|| panic!("{what}: the fixture lacks {key}"));
            assert_eq!(values.len(), want.len(), "{what}: {key} shape");
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.0, "{what}: {key} is all zero in the fixture");
            let (at, diff) = values
                .iter()
                .zip(want)
                .map(|(g, w)| (g - w).abs())
                .enumerate()
                .fold((0, 0f32), |best, (i, d)| if d > best.1 { (i, d) } else { best });
            let rel = diff / scale;
            assert!(
                rel <= TENSOR_REL,
                "{what}: {key} differs by {rel:.2e} of max|ref| {scale:.3e} (first worst at index {at}: got {}, want {})",
                values[at],
                want[at]
            );
            worst = worst.max(rel);
        }
    }
    worst
}

fn step_loss<B: TrainBackend>(m: &Loaded<B>, lora: &LoraFile, batch: &[Example]) -> (f32, LoraFile) {
    let device = DeviceLora::upload(&m.backend, lora).expect("upload");
    let out = futures::executor::block_on(loss_and_grads(&m.backend, &m.model, &device, batch, batch.len())).expect("pass");
    (out.loss, out.grads.as_file(lora))
}

/// A file's q/k rows moved between the fixture's (HF's) layout and the loaded model's (llama.cpp's adjacent pairs
/// in a llama GGUF).
fn to_model<B: TrainBackend>(m: &Loaded<B>, f: &LoraFile) -> LoraFile {
    f.qk_rows_moved(&m.model.config, RopeLayout::SplitHalves, m.model.config.rope_layout)
}

fn to_hf<B: TrainBackend>(m: &Loaded<B>, f: &LoraFile) -> LoraFile {
    f.qk_rows_moved(&m.model.config, m.model.config.rope_layout, RopeLayout::SplitHalves)
}

/// Trains 3 steps as the fixture's case does; returns the losses before each step and the adapter after.
fn train<B: TrainBackend>(m: &Loaded<B>, init: &LoraFile, batch: &[Example], case: &Value, opt: &AdamW) -> (Vec<f32>, LoraFile) {
    let mut params = init.clone();
    let mut moments = Moments::default();
    let steps = case["steps"].as_u64().expect("steps");
    let schedule = match case.get("peak_lr") {
        Some(peak) => Schedule {
            initial_lr: case["initial_lr"].as_f64().unwrap() as f32,
            peak_lr: peak.as_f64().unwrap() as f32,
            min_lr: case["min_lr"].as_f64().unwrap() as f32,
            warmup: case["warmup"].as_u64().unwrap(),
            total: case["total_steps"].as_u64().unwrap(),
        },
        None => Schedule::constant(opt.lr),
    };
    let max_norm = case["clip"].get("max_norm").and_then(Value::as_f64).map(|v| v as f32);
    let mut losses = Vec::new();
    for s in 0..steps {
        let lr = schedule.lr(s);
        let want_lr = case["lrs"][s as usize].as_f64().unwrap() as f32;
        assert!((lr - want_lr).abs() <= 1e-6 * want_lr.abs().max(1e-3), "step {s}: lr {lr} vs the fixture's {want_lr}");
        let (loss, mut grads) = step_loss(m, &params, batch);
        losses.push(loss);
        if let Some(max) = max_norm {
            clip_grad_norm(&mut grads, max);
        }
        opt.step(&mut params, &grads, &mut moments, lr).expect("AdamW step");
    }
    (losses, params)
}

fn check<B: TrainBackend>(name: &str, base: &str, m: &Loaded<B>, dir: &str) {
    let what = format!("{name} ({base}, {})", m.backend.name());
    let fixture_dir = fixture(&format!("train/{name}"));
    let spec = read_json(&fixture_dir.join("batch.json"));
    let reference = read_json(&fixture(&format!("train/{name}/{dir}reference.json")));
    let refs = references(&fixture(&format!("train/{name}/{dir}reference.safetensors")));
    let init = to_model(m, &LoraFile::open(fixture_dir.join("init")).expect("init adapter"));
    let batch = batch(&spec);

    let (loss, grads) = step_loss(m, &init, &batch);
    let grads = to_hf(m, &grads);
    let want = reference["loss"].as_f64().expect("loss");
    let rel = ((loss as f64 - want) / want).abs();
    assert!(rel <= LOSS_REL, "{what}: loss {loss} vs PyTorch's {want} ({rel:.2e} apart)");
    let worst = compare(&format!("{what} gradients"), &grads, &refs, "grad");
    eprintln!("{what}: loss {rel:.1e} apart, gradients worst {worst:.2e}");

    // Each layer's tape rebuilt in the backward pass (a stack above the memory budget): the same bits. One sequence
    // per stack: the same numbers within the bounds (only the sums' order differs).
    let device = DeviceLora::upload(&m.backend, &init).expect("upload");
    let pass = |together, budget| {
        futures::executor::block_on(loss_and_grads_within(&m.backend, &m.model, &device, &batch, together, budget))
            .expect("pass")
    };
    let (kept, rebuilt) = (pass(batch.len(), usize::MAX), pass(batch.len(), 0));
    assert_eq!(kept.loss.to_bits(), rebuilt.loss.to_bits(), "{what}: the loss with the tape rebuilt");
    assert!(kept.grads == rebuilt.grads, "{what}: the gradients with the tape rebuilt");
    let apart = pass(1, usize::MAX);
    assert!(((apart.loss as f64 - want) / want).abs() <= LOSS_REL, "{what}: loss, one sequence per stack");
    compare(&format!("{what} one sequence per stack"), &to_hf(m, &apart.grads.as_file(&init)), &refs, "grad");

    let o = &spec["optimizer"];
    let opt = AdamW {
        lr: o["lr"].as_f64().unwrap() as f32,
        beta1: o["betas"][0].as_f64().unwrap() as f32,
        beta2: o["betas"][1].as_f64().unwrap() as f32,
        eps: o["eps"].as_f64().unwrap() as f32,
        weight_decay: o["weight_decay"].as_f64().unwrap() as f32,
    };
    for (case, prefix) in [("adamw", "adamw3"), ("clipped", "clipped3")] {
        let (losses, after) = train(m, &init, &batch, &spec["cases"][case], &opt);
        let want: Vec<f64> = reference[case]["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        for (s, (got, want)) in losses.iter().zip(&want).enumerate() {
            let rel = ((*got as f64 - want) / want).abs();
            assert!(rel <= LOSS_REL, "{what} {case}: loss before step {s} {got} vs {want} ({rel:.2e})");
        }
        let worst = compare(&format!("{what} {case}"), &to_hf(m, &after), &refs, prefix);
        eprintln!("{what} {case}: losses {losses:?}, tensors after 3 steps worst {worst:.2e}");
    }
}

#[test]
fn llama_cpu() {
    check("llama", "safetensors", &load_cpu(&fixture("tiny/llama")), "");
}

#[test]
fn gemma2_cpu() {
    check("gemma2", "safetensors", &load_cpu(&fixture("tiny/gemma2")), "");
}

#[test]
fn gemma3_cpu() {
    check("gemma3", "safetensors", &load_cpu(&fixture("tiny/gemma3")), "");
}

#[test]
fn q8_0_twins_cpu() {
    for name in ["llama", "gemma2", "gemma3"] {
        check(name, "Q8_0 GGUF", &load_cpu(&fixture(&format!("tiny/{name}/model-q8_0.gguf"))), "q8_0/");
    }
}

#[test]
fn llama_gpu() {
    let Some(m) = load_gpu(&fixture("tiny/llama")) else { return };
    check("llama", "safetensors", &m, "");
}

#[test]
fn gemma2_gpu() {
    let Some(m) = load_gpu(&fixture("tiny/gemma2")) else { return };
    check("gemma2", "safetensors", &m, "");
}

#[test]
fn gemma3_gpu() {
    let Some(m) = load_gpu(&fixture("tiny/gemma3")) else { return };
    check("gemma3", "safetensors", &m, "");
}

#[test]
fn q8_0_twins_gpu() {
    for name in ["llama", "gemma2", "gemma3"] {
        let Some(m) = load_gpu(&fixture(&format!("tiny/{name}/model-q8_0.gguf"))) else { return };
        check(name, "Q8_0 GGUF", &m, "q8_0/");
    }
}
