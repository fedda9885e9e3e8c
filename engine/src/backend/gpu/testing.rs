//! Shared pieces of the kernel tests: a backend on the real adapter, and comparisons that name the first mismatch.

use super::{GpuBackend, GpuOptions, GpuTensor};
use crate::backend::Backend;

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
