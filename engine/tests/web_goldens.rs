//! The GPU backend in a browser: the wasm build of the engine, on the page's WebGPU, against the same tiny
//! HF-transformers goldens as tests/golden_hf.rs. Run by scripts/web-test.sh (`make web-test`) in headless Chromium,
//! where WebGPU comes from SwiftShader.
//!
//! Nothing here may block: the page has one thread, so a blocking wait on a buffer map would hang forever instead of
//! failing. Every readback is awaited, and a run that finishes is itself the proof.
//!
//! The fixtures are compiled in (the page has no file system); the tokenizer is not needed for logits.
#![cfg(target_arch = "wasm32")]

#[path = "common/logits.rs"]
mod logits;

use engine::backend::cpu::CpuBackend;
use engine::backend::gpu::{GpuBackend, GpuOptions};
use engine::backend::Backend;
use engine::model::ModelFiles;
use engine::session::Session;
use engine::source::MemorySource;
use logits::{as_matrix, as_u32s, assert_logits_close};
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

// WebGPU is exposed to pages and to dedicated workers alike; the page is the simplest host for it.
wasm_bindgen_test_configure!(run_in_browser);

/// The browser has no environment variables, so CI is read when the test is compiled: scripts/web-test.sh builds and
/// runs in one go, and cargo rebuilds when CI changes (option_env! is tracked).
fn under_ci() -> bool {
    option_env!("CI") == Some("true")
}

/// The GPU backend on the page's WebGPU adapter. Without one the test is skipped, except under CI=true, where the
/// script promises an adapter (Chromium's SwiftShader) and a missing one is a failure.
async fn gpu(options: &GpuOptions) -> Option<GpuBackend> {
    match GpuBackend::new(options).await {
        Ok(b) => Some(b),
        Err(e) if under_ci() => panic!("CI=true needs a WebGPU adapter in the browser: {e}"),
        Err(e) => {
            console_log!("skipping: no WebGPU adapter ({e})");
            None
        }
    }
}

/// One tiny checkpoint's files, as HF saves them.
struct Fixture {
    name: &'static str,
    config: &'static [u8],
    model: &'static [u8],
    reference: &'static [u8],
}

/// The bytes of one fixture file, compiled into the test wasm.
macro_rules! tiny {
    ($name:literal, $file:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tiny/",
            $name,
            "/",
            $file
        ))
    };
}

macro_rules! fixture {
    ($name:literal) => {
        Fixture {
            name: $name,
            config: tiny!($name, "config.json"),
            model: tiny!($name, "model.safetensors"),
            reference: tiny!($name, "reference.json"),
        }
    };
}

static LLAMA: Fixture = fixture!("llama");
static GEMMA2: Fixture = fixture!("gemma2");
static GEMMA3: Fixture = fixture!("gemma3");

/// Loads `fx` onto the GPU with `options` and checks it against the reference.
async fn check(fx: &Fixture, options: GpuOptions, label: &str) {
    let Some(backend) = gpu(&options).await else {
        return;
    };
    check_on(fx, &backend, label).await;
}

/// Checks the whole-prompt logits (Session::logits) and token-by-token decode against the reference at
/// max|diff|/max|ref| ≤ 1e-3 per position, as the native golden test does.
async fn check_on<B: Backend>(fx: &Fixture, backend: &B, label: &str) {
    let what = format!("{} (safetensors, {label})", fx.name);
    let source = MemorySource {
        name: format!("{}/model.safetensors", fx.name),
        bytes: fx.model.to_vec(),
    };
    let files = ModelFiles::from_hf(vec![source], fx.config, None, None)
        .await
        .unwrap_or_else(|e| panic!("{what}: reading the checkpoint: {e}"));
    let model = files
        .load(backend, &mut |_, _| {})
        .await
        .unwrap_or_else(|e| panic!("{what}: loading: {e}"));

    let reference: serde_json::Value =
        serde_json::from_slice(fx.reference).expect("reference.json parses");
    let tokens = as_u32s(&reference["tokens"]);
    let want = as_matrix(&reference["logits"]);

    let mut session = Session::new(backend, &model, None, tokens.len() + 1).expect("session");
    let got = session
        .logits(&tokens)
        .await
        .unwrap_or_else(|e| panic!("{what}: logits: {e}"));
    let worst = assert_logits_close(&what, &got, &want, 1e-3);
    console_log!("{what}: worst max|diff|/max|ref| = {worst:.2e}");

    // One position per forward pass: the decode shapes (single-row matmuls, attention over the cache).
    let mut cache = model.new_cache(backend, tokens.len()).expect("cache");
    let mut got = Vec::with_capacity(tokens.len());
    for &t in &tokens {
        let out = model
            .forward(backend, &mut cache, &[t], false)
            .unwrap_or_else(|e| panic!("{what}: decode: {e}"));
        got.extend(
            backend
                .to_host(&out)
                .await
                .unwrap_or_else(|e| panic!("{what}: decode readback: {e}")),
        );
    }
    let what = format!("{what} incremental");
    let worst = assert_logits_close(&what, &got, &want, 1e-3);
    console_log!("{what}: worst max|diff|/max|ref| = {worst:.2e}");
}

/// Fails, whatever CI says, when the page has no WebGPU adapter: the rest of this file is moot without one, and the
/// message says what to fix.
#[wasm_bindgen_test]
async fn webgpu_adapter_exists() {
    let backend = GpuBackend::new(&GpuOptions::default()).await.unwrap_or_else(|e| {
        panic!(
            "no WebGPU adapter in this browser: {e}. Chromium needs --enable-unsafe-webgpu --enable-features=Vulkan \
             --use-webgpu-adapter=swiftshader (scripts/web-test.sh passes them)"
        )
    });
    let a = backend.adapter();
    console_log!(
        "WebGPU adapter: {a}; type {}, shader-f16 {}, subgroups {}, max storage binding {} bytes, max buffer {} bytes",
        a.device_type,
        a.shader_f16,
        a.subgroups,
        a.max_storage_binding_bytes,
        a.max_buffer_bytes
    );
}

/// RMSNorm through the Backend trait and an awaited readback, against a host computation: the upload, dispatch and
/// map path every other GPU result also takes.
#[wasm_bindgen_test]
async fn rms_norm_reads_back_through_an_awaited_map() {
    let Some(b) = gpu(&GpuOptions::default()).await else {
        return;
    };
    // Rows wider than one 256-wide workgroup, and head-sized groups (QK-norm).
    for (rows, cols, group) in [(3, 577, 577), (5, 6 * 40, 40)] {
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let w: Vec<f32> = (0..group).map(|i| 0.5 + (i % 7) as f32 / 7.0).collect();
        let eps = 1e-6;
        let out = b
            .rms_norm(
                &b.tensor_from_host(&x, rows, cols).unwrap(),
                &b.upload_vector(&w).unwrap(),
                eps,
            )
            .unwrap();
        let got = b.to_host(&out).await.expect("readback");
        assert_eq!((got.len(), got[0].len()), (rows, cols), "readback shape");
        let want: Vec<f32> = x
            .chunks(group)
            .flat_map(|g| {
                let rms = (g.iter().map(|v| v * v).sum::<f32>() / group as f32 + eps).sqrt();
                g.iter().zip(&w).map(move |(v, w)| v / rms * w)
            })
            .collect();
        for (i, (g, w)) in got.concat().iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "rms_norm [{rows}, {cols}] / {group}: index {i}: {g} vs {w}"
            );
        }
    }
    console_log!("rms_norm on {}: matches the host", b.adapter());
}

#[wasm_bindgen_test]
async fn llama_matches_transformers() {
    check(&LLAMA, GpuOptions::default(), "webgpu").await;
}

#[wasm_bindgen_test]
async fn gemma2_matches_transformers() {
    check(&GEMMA2, GpuOptions::default(), "webgpu").await;
}

#[wasm_bindgen_test]
async fn gemma3_matches_transformers() {
    check(&GEMMA3, GpuOptions::default(), "webgpu").await;
}

/// A binding limit far below the embedding's size: every weight is split across buffers, as on a small adapter.
#[wasm_bindgen_test]
async fn gemma3_matches_transformers_with_4k_bindings() {
    let options = GpuOptions {
        max_binding_bytes: Some(4096),
        ..Default::default()
    };
    check(&GEMMA3, options, "webgpu, 4 KiB bindings").await;
}

/// The same checks on the CPU backend in the same page: they pass without any GPU kernel, so when only the WebGPU
/// tests fail, the fault is on the GPU side and not in the fixtures, the loading from memory or the comparison.
#[wasm_bindgen_test]
async fn cpu_backend_matches_transformers_in_the_browser() {
    let cpu = CpuBackend::new();
    for fx in [&LLAMA, &GEMMA2, &GEMMA3] {
        check_on(fx, &cpu, "cpu").await;
    }
}
