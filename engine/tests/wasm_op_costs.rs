//! What a decoded token's CPU work costs in wasm, op by op, in SmolLM2-135M's shapes, and where loading a model's
//! time goes: run in node by `scripts/bench-wasm-ops.sh` (the SIMD128 build, one thread), in seconds rather than a
//! browser session's minutes. A measurement, not a test: it prints and asserts nothing (the SIMD128 kernels' bits are
//! held by tests/web_cpu_simd.rs). Random weights with realistic f16 scales; `MODEL` (a GGUF path) for the load.
#![cfg(target_arch = "wasm32")]

use engine::backend::cpu::qmatmul::QMatrix;
use engine::backend::cpu::CpuBackend;
use engine::backend::{AttentionParams, Backend, KvSpec};
use engine::quant::GgmlType;
use wasm_bindgen_test::{console_log, wasm_bindgen_test};

fn now() -> f64 {
    js_sys::Date::now()
}

/// xorshift32: reproducible bytes without a dependency.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
}

/// Random blocks whose f16 scales have random mantissas around 0.06 (the float work depends on their bits).
fn matrix(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> QMatrix {
    let (bytes, scales): (usize, &[usize]) = match ty {
        GgmlType::Q4_1 => (20, &[1, 3]),
        _ => (34, &[1]),
    };
    let mut data: Vec<u8> = (0..rows * cols / 32 * bytes)
        .map(|_| rng.next() as u8)
        .collect();
    for block in data.chunks_exact_mut(bytes) {
        for &at in scales {
            block[at] = 0x2c;
        }
    }
    QMatrix::new(ty, rows, cols, data).unwrap()
}

fn time(what: &str, reps: usize, per_token: usize, mut f: impl FnMut()) {
    f();
    let t = now();
    for _ in 0..reps {
        f();
    }
    let ms = (now() - t) / reps as f64;
    console_log!(
        "{what:<32} {ms:8.3} ms × {per_token:2} per token = {:6.1} ms",
        ms * per_token as f64
    );
}

#[wasm_bindgen_test]
fn decode_op_costs() {
    let mut rng = Rng(0x9e37_79b9);
    let x: Vec<f32> = (0..1536).map(|_| rng.unit()).collect();
    for (name, ty, rows, cols, per_token) in [
        ("q, k, v  Q4_1 960 × 576", GgmlType::Q4_1, 960, 576, 30),
        ("o        Q4_1 576 × 576", GgmlType::Q4_1, 576, 576, 30),
        ("gate, up Q4_1 3072 × 576", GgmlType::Q4_1, 3072, 576, 30),
        ("down     Q4_1 576 × 1536", GgmlType::Q4_1, 576, 1536, 30),
        ("head     Q8_0 49152 × 576", GgmlType::Q8_0, 49152, 576, 1),
    ] {
        let w = matrix(&mut rng, ty, rows, cols);
        let reps = (100_000_000 / (rows * cols)).max(4);
        time(name, reps, per_token, || {
            std::hint::black_box(w.matmul(&x[..cols], 1).unwrap());
        });
    }
    let b = CpuBackend::new();
    let tensor = |values: &[f32], cols: usize| {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let rows = values.len() / cols;
        let table = b
            .upload_weight("x", GgmlType::F32, [rows, cols], &bytes)
            .unwrap();
        b.embed(&table, &(0..rows as u32).collect::<Vec<_>>(), None)
            .unwrap()
    };
    let (hq, hkv, d) = (9, 3, 64);
    let p = AttentionParams {
        n_heads: hq,
        n_kv_heads: hkv,
        head_dim: d,
        scale: 0.125,
        softcap: None,
        window: None,
    };
    for cached in [80, 400] {
        let spec = KvSpec {
            n_kv_heads: hkv,
            head_dim: d,
            max_positions: cached + 64,
            window: None,
        };
        let mut cache = b.new_kv_cache(spec).unwrap();
        let kv: Vec<f32> = (0..cached * hkv * d).map(|_| rng.unit()).collect();
        let (k, q0) = (
            tensor(&kv, hkv * d),
            tensor(&vec![0.1; cached * hq * d], hq * d),
        );
        b.attention(&q0, &k, &k, &mut cache, &p, 0).unwrap();
        let (q1, k1) = (tensor(&x[..hq * d], hq * d), tensor(&x[..hkv * d], hkv * d));
        let mut pos = cached;
        time(
            &format!("attention after {cached} positions"),
            20,
            30,
            || {
                b.attention(&q1, &k1, &k1, &mut cache, &p, pos).unwrap();
                pos += 1;
            },
        );
    }
}

#[wasm_bindgen_test]
async fn load_costs() {
    let path = js_sys::eval("process.env.MODEL || ''")
        .unwrap()
        .as_string()
        .unwrap_or_default();
    if path.is_empty() {
        console_log!("load: MODEL is not set");
        return;
    }
    let t0 = now();
    let file = js_sys::eval(&format!(
        "process.getBuiltinModule('fs').readFileSync({path:?})"
    ))
    .unwrap();
    let bytes = js_sys::Uint8Array::new(&file).to_vec();
    let t1 = now();
    let source = engine::source::MemorySource {
        name: path.clone(),
        bytes,
    };
    let files = engine::model::ModelFiles::from_gguf(source).await.unwrap();
    let t2 = now();
    let model = files
        .load(&CpuBackend::new(), &mut |_, _| {})
        .await
        .unwrap();
    let t3 = now();
    std::hint::black_box(&model);
    console_log!(
        "load {path}: file {:.0} ms, header and tokenizer {:.0} ms, weights {:.0} ms",
        t1 - t0,
        t2 - t1,
        t3 - t2
    );
}
