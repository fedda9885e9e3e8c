//! The CPU backend's quantized products and attention in the browser. `QMatrix::matmul` (the wasm SIMD128 kernels
//! in the build with `-C target-feature=+simd128`, which scripts/web-test.sh runs as well as the portable build)
//! against `matmul_portable`, bit for bit, on random blocks of every weight format, for a lone row (decode), a few
//! rows and a prefill's many, with row counts that do and do not take llama.cpp's repacked kernels (so every K-quant
//! formula: `Vec` for a lone row, `Tiled` for many, `Repacked` / `RepackedGemm` for Q4_K with 16 rows); attention
//! against the portable backend's. In the build with relaxed SIMD as well (the worker the page starts where the
//! browser has it), every SIMD result is checked twice — with wasm's relaxed multiply-add, where this engine fuses
//! it, and with the emulation — against the portable code on the emulation, so the one instruction is held against
//! an independent computation of the same rounding. In the portable build the two are the same code and the test only
//! says which build ran.
#![cfg(target_arch = "wasm32")]

use engine::backend::cpu::qmatmul::QMatrix;
use engine::backend::cpu::{allow_fused_madd, fused_madd, CpuBackend};
use engine::backend::{AttentionParams, Backend, KvSpec};
use engine::quant::GgmlType;
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// xorshift64*: reproducible random bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
    /// A finite f16 scale of either sign, from tiny (subnormal products) to large, as little-endian bytes.
    fn f16_bytes(&mut self) -> [u8; 2] {
        let exp = 1 + (self.next() % 20) as u16; // 2^-14 .. 2^5
        let bits = ((self.byte() as u16 & 1) << 15) | (exp << 10) | (self.next() as u16 & 0x3ff);
        bits.to_le_bytes()
    }
}

/// Block bytes and values per block, and the offsets of f16 fields (the rest is random quant bytes).
fn layout(ty: GgmlType) -> (usize, usize, &'static [usize]) {
    match ty {
        GgmlType::Q4_0 => (18, 32, &[0]),
        GgmlType::Q4_1 => (20, 32, &[0, 2]),
        GgmlType::Q5_0 => (22, 32, &[0]),
        GgmlType::Q5_1 => (24, 32, &[0, 2]),
        GgmlType::Q8_0 => (34, 32, &[0]),
        GgmlType::Q4K => (144, 256, &[0, 2]),
        GgmlType::Q5K => (176, 256, &[0, 2]),
        GgmlType::Q6K => (210, 256, &[208]),
        _ => unreachable!(),
    }
}

fn random_matrix(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> QMatrix {
    let (bytes, values, f16s) = layout(ty);
    let blocks = rows * cols / values;
    let mut data = vec![0u8; blocks * bytes];
    for b in data.chunks_exact_mut(bytes) {
        for v in b.iter_mut() {
            *v = rng.byte();
        }
        for &at in f16s {
            b[at..at + 2].copy_from_slice(&rng.f16_bytes());
        }
    }
    QMatrix::new(ty, rows, cols, data).unwrap()
}

fn same_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: value {i} is {g:e} with SIMD128, {w:e} portable"
        );
    }
}

/// Activations of very different sizes per row, so the Q8 scales vary too; row 7 (of a prefill's 9) is so small
/// that scale products and sums are subnormal, the case the SIMD kernels' fused multiply-adds hand to the scalar one.
fn row_scale(r: usize) -> f32 {
    if r == 7 {
        2f32.powi(-118)
    } else {
        (1 << (r % 7 * 3)) as f32
    }
}

fn build() -> &'static str {
    if cfg!(target_feature = "relaxed-simd") {
        if fused_madd() {
            "SIMD128 with relaxed SIMD (its multiply-add is fused here)"
        } else {
            "SIMD128 with relaxed SIMD (its multiply-add is not fused here: emulated)"
        }
    } else if cfg!(target_feature = "simd128") {
        "SIMD128 (core::arch::wasm32 kernels)"
    } else {
        "portable"
    }
}

/// The portable computation on the emulated fused multiply-add, and the SIMD one in each way this build and engine
/// can run it (fused relaxed multiply-add, emulation), each as (how, result).
fn both_ways<T>(portable: impl Fn() -> T, simd: impl Fn() -> T) -> (T, Vec<(&'static str, T)>) {
    allow_fused_madd(false);
    let (want, emulated) = (portable(), simd());
    allow_fused_madd(true);
    let mut got = vec![("", emulated)];
    if fused_madd() {
        got[0].0 = " (emulated multiply-add)";
        got.push((" (relaxed multiply-add)", simd()));
    }
    (want, got)
}

#[wasm_bindgen_test]
fn cpu_simd128_quantized_products_equal_the_portable_ones_bit_for_bit() {
    console_log!("wasm build: {}", build());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];
    let mut checked = 0;
    for ty in types {
        // 16 rows: llama.cpp's repacked kernels (Q4_0, Q4_K); 13: the plain ones.
        for (rows, cols) in [(16, 512), (13, 768)] {
            for trial in 0..3 {
                let w = random_matrix(&mut rng, ty, rows, cols);
                for m in [1, 3, 9] {
                    let x: Vec<f32> = (0..m * cols)
                        .map(|i| rng.unit() * row_scale(i / cols))
                        .collect();
                    let what = format!("{} {rows}x{cols} trial {trial} m={m}", ty.name());
                    let (want, got) = both_ways(
                        || w.matmul_portable(&x, m).unwrap(),
                        || w.matmul(&x, m).unwrap(),
                    );
                    for (how, got) in got {
                        same_bits(&format!("{what}{how}"), &got, &want);
                        checked += m * rows;
                    }
                    let (want, got) = both_ways(
                        || w.matmul_independent_portable(&x, m).unwrap(),
                        || w.matmul_independent(&x, m).unwrap(),
                    );
                    for (how, got) in got {
                        same_bits(&format!("{what} independent{how}"), &got, &want);
                        checked += m * rows;
                    }
                }
            }
        }
    }
    console_log!("{checked} dot products equal bit for bit");
}

/// Attention on the CPU backend with SIMD128 (its f32 dot products and value sums, fused multiply-adds four lanes at
/// a time) against the portable backend, bit for bit: a prefill batch, decode steps, a second batch, more decode
/// steps (past 32 and 64 cached positions, where ggml's accumulator lanes wrap); SmolLM2's head counts, and a head
/// size that leaves tails (40) with Gemma 2's soft-capping and a sliding window.
#[wasm_bindgen_test]
fn cpu_simd128_attention_equals_the_portable_one_bit_for_bit() {
    for (hq, hkv, d, softcap, window) in [(9, 3, 64, None, None), (4, 1, 40, Some(50.0), Some(45))]
    {
        let p = AttentionParams {
            n_heads: hq,
            n_kv_heads: hkv,
            head_dim: d,
            scale: 0.125,
            softcap,
            window,
        };
        let run = |b: &CpuBackend| {
            let tensor = |values: &[f32], cols: usize| {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                let rows = values.len() / cols;
                let table = b
                    .upload_weight("x", GgmlType::F32, [rows, cols], &bytes)
                    .unwrap();
                b.embed(&table, &(0..rows as u32).collect::<Vec<_>>(), None)
                    .unwrap()
            };
            let spec = KvSpec {
                n_kv_heads: hkv,
                head_dim: d,
                max_positions: 128,
                window,
            };
            let mut cache = b.new_kv_cache(spec).unwrap();
            let mut rng = Rng(0x5eed_0000 + hq as u64);
            let mut random = |n: usize| (0..n).map(|_| 3.0 * rng.unit()).collect::<Vec<f32>>();
            let (mut pos, mut out) = (0, Vec::new());
            for rows in [37, 1, 1, 30, 1, 1] {
                let (q, k, v) = (
                    random(rows * hq * d),
                    random(rows * hkv * d),
                    random(rows * hkv * d),
                );
                let y = b
                    .attention(
                        &tensor(&q, hq * d),
                        &tensor(&k, hkv * d),
                        &tensor(&v, hkv * d),
                        &mut cache,
                        &p,
                        pos,
                    )
                    .unwrap();
                out.extend(futures::executor::block_on(b.to_host(&y)).unwrap().concat());
                pos += rows;
            }
            out
        };
        let (portable, simd) =
            both_ways(|| run(&CpuBackend::portable()), || run(&CpuBackend::new()));
        for (how, simd) in simd {
            let what = format!("attention {hq}/{hkv} heads of {d}{how}");
            same_bits(&what, &simd, &portable);
            console_log!("{what}: {} values equal bit for bit", simd.len());
        }
    }
}
