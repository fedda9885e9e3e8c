//! wasm's relaxed multiply-add (`f32x4.relaxed_madd`), for the worker built with `+relaxed-simd`: the spec lets each
//! engine round it once (fused) or twice, and engines pick by the hardware — fused wherever it has FMA (V8 on x86-64
//! with FMA3, every ARM64). Fused, it is the one instruction that gives the native backend's fused multiply-adds bit
//! for bit, where the SIMD128 build emulates them through f64 at several times the cost; rounded twice, it would
//! change the answer, so the kernels ask [`fused`] and keep the emulation otherwise.

use core::arch::wasm32::*;
use core::sync::atomic::{AtomicU8, Ordering};

const UNKNOWN: u8 = 0;
const SEPARATE: u8 = 1;
const FUSED: u8 = 2;
/// Fused or not, the emulation runs ([`allow`]).
const DISABLED: u8 = 3;

static MADD: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether this engine's `f32x4.relaxed_madd` rounds once, probed on first use. (1 + 2⁻¹²)² − (1 + 2⁻¹¹) is
/// 2⁻²⁴ exactly, but the product alone rounds to 1 + 2⁻¹¹ (the 2⁻²⁴ is half an ulp, a tie to even), so only a
/// fused multiply-add leaves anything. The inputs go through `black_box` so that no compiler folds the probe.
#[inline(always)]
pub(crate) fn fused() -> bool {
    match MADD.load(Ordering::Relaxed) {
        FUSED => true,
        UNKNOWN => probe(),
        _ => false,
    }
}

/// Whether the kernels may take the relaxed multiply-add where it is fused (the default). Either way they give the
/// same bits; the tests hold one way against the other.
pub(crate) fn allow(allowed: bool) {
    MADD.store(if allowed { UNKNOWN } else { DISABLED }, Ordering::Relaxed);
}

#[cold]
#[inline(never)]
fn probe() -> bool {
    let a = core::hint::black_box(1.0 + f32::powi(2.0, -12));
    let c = core::hint::black_box(-(1.0 + f32::powi(2.0, -11)));
    let r = f32x4_relaxed_madd(f32x4_splat(a), f32x4_splat(a), f32x4_splat(c));
    let fused = f32x4_extract_lane::<0>(r) == f32::powi(2.0, -24);
    MADD.store(if fused { FUSED } else { SEPARATE }, Ordering::Relaxed);
    fused
}
