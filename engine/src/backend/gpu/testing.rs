//! Shared pieces of the kernel tests: a backend on the real adapter, and comparisons that name the first mismatch.

use super::{GpuBackend, GpuOptions, GpuTensor};
use crate::backend::cpu::q8;
use crate::backend::Backend;
use crate::quant::GgmlType;

/// The GPU backend, or None (test skipped) when the machine has no adapter. Under CI=true a missing adapter fails.
pub(crate) fn backend_with(options: GpuOptions) -> Option<GpuBackend> {
    match futures::executor::block_on(GpuBackend::new(&options)) {
        Ok(b) => Some(b),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI needs a GPU adapter: {e}")
        }
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

/// The f32 path (the one every kernel test compares with the CPU at tight bounds).
pub(crate) fn backend() -> Option<GpuBackend> {
    backend_with(GpuOptions {
        force_f32: true,
        ..Default::default()
    })
}

/// The exact path (GpuOptions::exact), whose kernels must equal the CPU backend bit for bit.
pub(crate) fn exact_backend() -> Option<GpuBackend> {
    backend_with(GpuOptions {
        exact: true,
        ..Default::default()
    })
}

/// Asserts got and want are the same f32 values bit for bit (a 0 of either sign equals a 0), naming the first
/// index that differs.
pub(crate) fn assert_same_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got
        .iter()
        .zip(want)
        .position(|(g, w)| g.to_bits() != w.to_bits() && !(*g == 0.0 && *w == 0.0))
    {
        panic!(
            "{what}: first mismatch at index {i}: gpu {:e} ({:#010x}) vs cpu {:e} ({:#010x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

pub(crate) fn read(b: &GpuBackend, t: &GpuTensor) -> Vec<f32> {
    futures::executor::block_on(b.to_host(t))
        .expect("readback")
        .concat()
}

/// Asserts |got - want| <= tol · max(1, max |want|) element-wise, naming the first index that differs.
pub(crate) fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    if let Some(i) = got
        .iter()
        .zip(want)
        .position(|(g, w)| !((g - w).abs() <= tol * scale))
    {
        panic!(
            "{what}: first mismatch at index {i}: gpu {} vs cpu {} (tolerance {})",
            got[i],
            want[i],
            tol * scale
        );
    }
}

/// Deterministic values in [-1, 1) (xorshift), so failures reproduce.
pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// ggml's CPU rounding of `x` for `dtype`, and Q8_1's per-block delta (f16(d·Σq) - f16(d)·Σq).
pub(crate) fn cpu_rounding(x: &[f32], dtype: GgmlType) -> (Vec<f32>, Option<Vec<f32>>) {
    match dtype {
        GgmlType::Q4_1 => {
            let mut blocks = vec![q8::BlockQ8_1::default(); x.len() / 32];
            q8::quantize_q8_1(x, &mut blocks);
            let rounded = blocks
                .iter()
                .flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d))
                .collect();
            let delta = blocks
                .iter()
                .map(|b| b.s - b.d * b.qs.iter().map(|&q| q as i32).sum::<i32>() as f32);
            (rounded, Some(delta.collect()))
        }
        GgmlType::Q4_0 | GgmlType::Q8_0 => {
            let mut blocks = vec![q8::BlockQ8_0::default(); x.len() / 32];
            q8::quantize_q8_0(x, &mut blocks);
            (
                blocks
                    .iter()
                    .flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d))
                    .collect(),
                None,
            )
        }
        GgmlType::Q6K => {
            let mut blocks = vec![q8::BlockQ8K::default(); x.len() / 256];
            q8::quantize_q8_k(x, &mut blocks);
            (
                blocks
                    .iter()
                    .flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d))
                    .collect(),
                None,
            )
        }
        GgmlType::F16 => (
            x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
            None,
        ),
        GgmlType::BF16 => (
            x.iter()
                .map(|&v| half::bf16::from_f32(v).to_f32())
                .collect(),
            None,
        ),
        other => unreachable!("no rounding test for {other:?}"),
    }
}
