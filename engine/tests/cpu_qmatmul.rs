//! The CPU backend's kernels against ggml's own (llama-cpp-python's libggml, the x86 AVX2 build our llama.cpp
//! references run, called through ctypes by tests/fixtures/qmatmul/gen_qmatmul_refs.py):
//! - activation rows quantized to Q8_0 / Q8_1 / Q8_K are byte-identical to ggml's CPU `from_float` (rounding ties,
//!   zero blocks, subnormal f16 scales and outliers included);
//! - for every weight type, x · Wᵀ equals ggml_mul_mat for one row at a time (decode) and 7 and 9 rows at once
//!   (prefill), including Q4_0 / Q4_K weights in ggml's repacked layout, on the SIMD and the portable code paths,
//!   and so does each part of a packed product computed apart;
//! - rms_norm, swiglu, geglu, RoPE (both pair layouts), and attention as llama.cpp's graph computes it (batch and
//!   single query, GQA, sliding window, soft-capping) equal ggml's results, and our GELU table is ggml's.
//!
//! Every check runs on the SIMD backend and on the portable one. On x86-64 the results must be bit-identical: that
//! is what keeps whole-model logits on llama.cpp's trajectory (see engine/src/backend/cpu/ops.rs). Elsewhere libm
//! and FMA availability differ, so a 1e-5 relative band applies.
// Native only: it reads files from disk, and wasm32 has no file system (the browser tests are tests/web_goldens.rs).
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use engine::backend::cpu::q8::{self, BlockQ8K, BlockQ8_0, BlockQ8_1};
use engine::backend::cpu::qmatmul::QMatrix;
use engine::backend::cpu::CpuBackend;
use engine::backend::{AttentionParams, Backend, KvSpec};
use engine::config::{Activation, RopeLayout};
use engine::quant::GgmlType;

type T = <CpuBackend as Backend>::Tensor;

fn read(name: &str) -> Vec<u8> {
    let p = fixture(&format!("qmatmul/{name}"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn read_f32(name: &str) -> Vec<f32> {
    f32s(&read(name))
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn manifest() -> serde_json::Value {
    read_json(&fixture("qmatmul/refs.json"))
}

fn usize_of(v: &serde_json::Value) -> usize {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count")) as usize
}

/// Bit-identical on x86-64; within 1e-5 of each row's largest |value| elsewhere. `n` is the row length.
fn assert_same(what: &str, got: &[f32], want: &[f32], n: usize) {
    assert_close(what, got, want, n, cfg!(target_arch = "x86_64"));
}

fn assert_close(what: &str, got: &[f32], want: &[f32], n: usize, exact: bool) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, reference has {}",
        got.len(),
        want.len()
    );
    for (r, (g, w)) in got.chunks(n).zip(want.chunks(n)).enumerate() {
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (j, (a, b)) in g.iter().zip(w).enumerate() {
            let ok = if exact {
                a.to_bits() == b.to_bits()
            } else {
                (a - b).abs() <= 1e-5 * scale
            };
            assert!(ok, "{what}: row {r} column {j}: got {a:e} want {b:e}");
        }
    }
}

/// A `[rows, cols]` activation tensor, made through the Backend trait alone: an F32 "embedding table" looked up by
/// row.
fn tensor(b: &CpuBackend, values: &[f32], cols: usize) -> T {
    let rows = values.len() / cols;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let table = b
        .upload_weight("activations", GgmlType::F32, [rows, cols], &bytes)
        .unwrap();
    let ids: Vec<u32> = (0..rows as u32).collect();
    b.embed(&table, &ids, None).unwrap()
}

fn host(b: &CpuBackend, t: &T) -> Vec<f32> {
    futures::executor::block_on(b.to_host(t)).unwrap().concat()
}

fn backends() -> [(&'static str, CpuBackend); 2] {
    [
        ("simd", CpuBackend::new()),
        ("portable", CpuBackend::portable()),
    ]
}

struct Case {
    ty: GgmlType,
    n: usize,
    k: usize,
    m: usize,
    weights: Vec<u8>,
    x: Vec<f32>,
    /// Each row alone, then rows 0..7 at once, then all m at once.
    decode: Vec<f32>,
    batch7: Vec<f32>,
    batch_all: Vec<f32>,
}

fn case(name: &str) -> Case {
    let man = manifest();
    let c = &man["matmul"][name];
    let (n, k, m) = (usize_of(&c["rows"]), usize_of(&c["k"]), usize_of(&c["m"]));
    let out = read_f32(&format!("{name}.out.f32"));
    assert_eq!(out.len(), (m + 7 + m) * n, "{name}: reference size");
    Case {
        ty: GgmlType::from_id(usize_of(&c["id"]) as u32).unwrap(),
        n,
        k,
        m,
        weights: read(&format!("{name}.bin")),
        x: read_f32(&format!("x{k}.f32")),
        decode: out[..m * n].to_vec(),
        batch7: out[m * n..(m + 7) * n].to_vec(),
        batch_all: out[(m + 7) * n..].to_vec(),
    }
}

/// Through the backend exactly as the transformer calls it. Float weights go through candle's GEMM, whose summation
/// order is not ggml's: those products agree to float noise only (their outputs are not rounded to 8 bits
/// downstream the way quantized activations are, so nothing amplifies the difference).
fn check_backend(name: &str) {
    let c = case(name);
    let exact = c.ty.is_quantized() && cfg!(target_arch = "x86_64");
    for (path, b) in backends() {
        let w = b.upload_weight(name, c.ty, [c.n, c.k], &c.weights).unwrap();
        let run = |rows: std::ops::Range<usize>| {
            host(
                &b,
                &b.matmul(&tensor(&b, &c.x[rows.start * c.k..rows.end * c.k], c.k), &w)
                    .unwrap(),
            )
        };
        let check = |what: String, rows: std::ops::Range<usize>, want: &[f32]| {
            assert_close(
                &format!("{name} {path} {what}"),
                &run(rows),
                want,
                c.n,
                exact,
            )
        };
        for i in 0..c.m {
            check(
                format!("decode row {i}"),
                i..i + 1,
                &c.decode[i * c.n..(i + 1) * c.n],
            );
        }
        check("prefill 7".into(), 0..7, &c.batch7);
        check(format!("prefill {}", c.m), 0..c.m, &c.batch_all);
        // The same weight as a packed projection's, cut into parts as it is computed: each part is its columns
        // of ggml's product (a lone row's for rows of different sequences).
        let widths = [16, 8, c.n - 24];
        let x = tensor(&b, &c.x[..c.m * c.k], c.k);
        for (independent, want) in [(false, &c.batch_all), (true, &c.decode)] {
            let parts = b.matmul_parts(&x, &w, &widths, independent).unwrap();
            let mut first = 0;
            for (part, &width) in parts.iter().zip(&widths) {
                let want: Vec<f32> = want
                    .chunks(c.n)
                    .flat_map(|row| &row[first..first + width])
                    .copied()
                    .collect();
                let what = format!("{name} {path} part at column {first} (independent rows: {independent})");
                assert_close(&what, &host(&b, part), &want, width, exact);
                first += width;
            }
        }
    }
}

/// The quantized kernels directly, SIMD and portable paths.
fn check_qmatrix(name: &str) {
    let c = case(name);
    let w = QMatrix::new(c.ty, c.n, c.k, c.weights.clone()).unwrap();
    for portable in [false, true] {
        let what = |s: &str| format!("{name} {} {s}", if portable { "portable" } else { "simd" });
        let mm = |x: &[f32], m: usize| {
            if portable {
                w.matmul_portable(x, m)
            } else {
                w.matmul(x, m)
            }
            .unwrap()
        };
        for i in 0..c.m {
            let got = mm(&c.x[i * c.k..(i + 1) * c.k], 1);
            assert_same(
                &what(&format!("decode row {i}")),
                &got,
                &c.decode[i * c.n..(i + 1) * c.n],
                c.n,
            );
        }
        assert_same(&what("prefill 7"), &mm(&c.x[..7 * c.k], 7), &c.batch7, c.n);
        assert_same(&what("prefill all"), &mm(&c.x, c.m), &c.batch_all, c.n);
    }
}

/// Runs `f` with the AVX2 kernels' AVX-512 VNNI forms allowed (used where the CPU has them), then without: the same
/// bits either way. The switch is the process's, so the tests that flip it take turns.
fn with_and_without_vnni(f: impl Fn()) {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    for vnni in [true, false] {
        eprintln!("AVX-512 VNNI allowed: {vnni}");
        engine::backend::cpu::ops::allow_vnni(vnni);
        f();
    }
    engine::backend::cpu::ops::allow_vnni(true);
}

macro_rules! matmul_tests {
    ($($test:ident => $name:literal, quantized: $q:literal;)*) => {$(
        #[test]
        fn $test() {
            with_and_without_vnni(|| {
                check_backend($name);
                if $q {
                    check_qmatrix($name);
                }
            });
        }
    )*};
}

matmul_tests! {
    f32_matmul_matches_ggml => "F32", quantized: false;
    f16_matmul_matches_ggml => "F16", quantized: false;
    bf16_matmul_matches_ggml => "BF16", quantized: false;
    q4_0_matmul_matches_ggml => "Q4_0", quantized: true;
    q4_0_repacked_matmul_matches_ggml => "Q4_0_repacked", quantized: true;
    q4_1_matmul_matches_ggml => "Q4_1", quantized: true;
    q5_0_matmul_matches_ggml => "Q5_0", quantized: true;
    q5_1_matmul_matches_ggml => "Q5_1", quantized: true;
    q8_0_matmul_matches_ggml => "Q8_0", quantized: true;
    q4_k_matmul_matches_ggml => "Q4_K", quantized: true;
    q4_k_repacked_matmul_matches_ggml => "Q4_K_repacked", quantized: true;
    q5_k_matmul_matches_ggml => "Q5_K", quantized: true;
    q6_k_matmul_matches_ggml => "Q6_K", quantized: true;
}

/// Our activation blocks against the bytes ggml's CPU quantizer wrote for the same rows.
#[test]
fn activation_quantization_is_byte_identical_to_ggml() {
    let man = manifest();
    for k in man["act_rows"].as_array().unwrap().iter().map(usize_of) {
        let x = read_f32(&format!("x{k}.f32"));
        for (act, info) in man["act_types"].as_object().unwrap() {
            let (block, block_bytes) = (usize_of(&info["block"]), usize_of(&info["block_bytes"]));
            if k % block != 0 {
                continue;
            }
            let want = read(&format!("x{k}.{act}.bin"));
            assert_eq!(want.len(), x.len() / block * block_bytes);
            for (bi, (xb, wb)) in x
                .chunks_exact(block)
                .zip(want.chunks_exact(block_bytes))
                .enumerate()
            {
                let at = format!("x{k} {act} block {bi} (row {})", bi / (k / block));
                match act.as_str() {
                    "Q8_0" => {
                        let mut ours = [BlockQ8_0::default()];
                        q8::quantize_q8_0(xb, &mut ours);
                        assert_eq!(ours[0].d.to_bits(), f16_at(wb, 0).to_bits(), "{at}: scale");
                        assert_eq!(ours[0].qs.map(|q| q as u8), wb[2..34], "{at}: quants");
                    }
                    "Q8_1" => {
                        let mut ours = [BlockQ8_1::default()];
                        q8::quantize_q8_1(xb, &mut ours);
                        assert_eq!(ours[0].d.to_bits(), f16_at(wb, 0).to_bits(), "{at}: scale");
                        assert_eq!(
                            ours[0].s.to_bits(),
                            f16_at(wb, 2).to_bits(),
                            "{at}: d * sum"
                        );
                        assert_eq!(ours[0].qs.map(|q| q as u8), wb[4..36], "{at}: quants");
                    }
                    "Q8_K" => {
                        let mut ours = [BlockQ8K::default()];
                        q8::quantize_q8_k(xb, &mut ours);
                        assert_eq!(
                            ours[0].d.to_bits(),
                            f32s(&wb[..4])[0].to_bits(),
                            "{at}: scale"
                        );
                        assert_eq!(ours[0].qs.map(|q| q as u8), wb[4..260], "{at}: quants");
                        let bsums: Vec<i16> = wb[260..292]
                            .chunks_exact(2)
                            .map(|b| i16::from_le_bytes([b[0], b[1]]))
                            .collect();
                        assert_eq!(ours[0].bsums.to_vec(), bsums, "{at}: sums");
                    }
                    other => panic!("unexpected activation type {other}"),
                }
            }
        }
    }
}

#[test]
fn rms_norm_matches_ggml() {
    let op = &manifest()["ops"]["rms_norm"];
    let n = usize_of(&op["x"][1]);
    for (path, b) in backends() {
        let x = tensor(&b, &read_f32("op_rms_x.f32"), n);
        let w = b.upload_vector(&read_f32("op_rms_w.f32")).unwrap();
        let y = b
            .rms_norm(&x, &w, op["eps"].as_f64().unwrap() as f32)
            .unwrap();
        assert_same(
            &format!("rms_norm {path}"),
            &host(&b, &y),
            &read_f32("op_rms_y.f32"),
            n,
        );
    }
}

#[test]
fn gated_activations_match_ggml() {
    let op = &manifest()["ops"]["glu"];
    let n = usize_of(&op["gate"][1]);
    for (path, b) in backends() {
        let gate = tensor(&b, &read_f32("op_glu_gate.f32"), n);
        let up = tensor(&b, &read_f32("op_glu_up.f32"), n);
        for (act, want) in [
            (Activation::Silu, "op_swiglu_y.f32"),
            (Activation::GeluTanhF16Table, "op_geglu_y.f32"),
        ] {
            let y = b.gated_activation(&gate, &up, act).unwrap();
            assert_same(
                &format!("{act:?} {path}"),
                &host(&b, &y),
                &read_f32(want),
                n,
            );
        }
    }
}

#[test]
fn gelu_table_is_ggmls() {
    let want = manifest()["ops"]["gelu_table_fnv1a"]
        .as_str()
        .unwrap()
        .to_string();
    let table = engine::backend::cpu::ops::gelu_table_bits();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, &v) in table.iter().enumerate() {
        if half::f16::from_bits(i as u16).to_f32().abs() < 10.0 {
            for byte in v.to_le_bytes() {
                h = (h ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    assert_eq!(
        format!("{h:016x}"),
        want,
        "GELU table over |x| < 10 differs from ggml_table_gelu_f16"
    );
}

#[test]
fn rope_matches_ggml() {
    let op = &manifest()["ops"]["rope"];
    let (heads, d) = (usize_of(&op["x"][1]), usize_of(&op["x"][2]));
    let base = op["base"].as_f64().unwrap();
    // As the model loader computes the table (config.rs: base^(-2i/d) in f64).
    let inv: Vec<f32> = (0..d / 2)
        .map(|i| base.powf(-(2.0 * i as f64) / d as f64) as f32)
        .collect();
    let layouts = [
        (RopeLayout::Adjacent, "op_rope_adjacent.f32"),
        (RopeLayout::SplitHalves, "op_rope_halves.f32"),
    ];
    for (path, b) in backends() {
        let x = tensor(&b, &read_f32("op_rope_x.f32"), heads * d);
        for (layout, want) in layouts {
            let table = b.rope_table(&inv, layout).unwrap();
            let y = b.rope(&x, &table, heads, usize_of(&op["start"])).unwrap();
            assert_same(
                &format!("rope {layout:?} {path}"),
                &host(&b, &y),
                &read_f32(want),
                heads * d,
            );
        }
    }
}

/// The cache is filled with the earlier positions first (their outputs unused), then the queries run on top, as a
/// prefill followed by a later batch or a decode step.
#[test]
fn attention_matches_ggml() {
    for op in manifest()["ops"]["attention"].as_array().unwrap() {
        let name = op["name"].as_str().unwrap();
        let (hq, hkv, d) = (
            usize_of(&op["n_heads"]),
            usize_of(&op["n_kv_heads"]),
            usize_of(&op["head_dim"]),
        );
        let (total, nq) = (usize_of(&op["total"]), usize_of(&op["queries"]));
        let window = op["window"].as_u64().map(|w| w as usize);
        let p = AttentionParams {
            n_heads: hq,
            n_kv_heads: hkv,
            head_dim: d,
            scale: op["scale"].as_f64().unwrap() as f32,
            softcap: op["softcap"].as_f64().map(|c| c as f32),
            window,
        };
        let (k, v) = (
            read_f32(&format!("op_att_{name}_k.f32")),
            read_f32(&format!("op_att_{name}_v.f32")),
        );
        let q = read_f32(&format!("op_att_{name}_q.f32"));
        let want = read_f32(&format!("op_att_{name}_y.f32"));
        let (pre, kv) = (total - nq, hkv * d);
        for (path, b) in backends() {
            let spec = KvSpec {
                n_kv_heads: hkv,
                head_dim: d,
                max_positions: total.max(64),
                window,
            };
            let mut cache = b.new_kv_cache(spec).unwrap();
            if pre > 0 {
                let (q0, k0, v0) = (vec![0.0; pre * hq * d], &k[..pre * kv], &v[..pre * kv]);
                let (q0, k0, v0) = (
                    tensor(&b, &q0, hq * d),
                    tensor(&b, k0, kv),
                    tensor(&b, v0, kv),
                );
                b.attention(&q0, &k0, &v0, &mut cache, &p, 0).unwrap();
            }
            let (q1, k1, v1) = (
                tensor(&b, &q, hq * d),
                tensor(&b, &k[pre * kv..], kv),
                tensor(&b, &v[pre * kv..], kv),
            );
            let y = b.attention(&q1, &k1, &v1, &mut cache, &p, pre).unwrap();
            assert_same(
                &format!("attention {name} {path}"),
                &host(&b, &y),
                &want,
                hq * d,
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    assert!(
        QMatrix::new(GgmlType::Q4_0, 2, 32, vec![0; 35]).is_err(),
        "wrong byte count"
    );
    assert!(
        QMatrix::new(GgmlType::Q4_0, 2, 48, vec![0; 54]).is_err(),
        "row not a whole number of blocks"
    );
    assert!(
        QMatrix::new(GgmlType::F16, 2, 32, vec![0; 128]).is_err(),
        "not a block type"
    );
    assert!(
        QMatrix::new(GgmlType::Q4K, usize::MAX, 256, vec![]).is_err(),
        "overflowing shape"
    );
    let w = QMatrix::new(GgmlType::Q8_0, 2, 32, vec![0; 68]).unwrap();
    assert!(
        w.matmul(&[0.0; 33], 1).is_err(),
        "activations not m rows of cols"
    );
    assert_eq!(w.matmul(&[1.0; 64], 2).unwrap(), vec![0.0; 4]);
    let b = CpuBackend::new();
    let table = b
        .upload_weight("t", GgmlType::Q8_0, [2, 32], &[0; 68])
        .unwrap();
    assert!(
        b.embed(&table, &[2], None).is_err(),
        "token id past the vocabulary"
    );
    let x = tensor(&b, &[1.0; 48], 48);
    assert!(
        b.matmul(&x, &table).is_err(),
        "activation width differs from the weight's"
    );
}
