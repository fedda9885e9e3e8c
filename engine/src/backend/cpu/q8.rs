//! Activation quantisation exactly as llama.cpp's x86 AVX2 build performs it before a quantized matmul.
//!
//! ggml multiplies a quantized weight by an activation row quantized to the weight type's `vec_dot_type`:
//! Q8_0 (for Q4_0, Q5_0, Q8_0 weights), Q8_1 (Q4_1, Q5_1) or Q8_K (K-quants). The rounding details decide which
//! integer each activation becomes, so they are copied from the build our reference llama.cpp runs:
//! - Q8_0 / Q8_1 (`quantize_row_q8_0` / `_q8_1` in ggml-cpu/arch/x86/quants.c, and the 4-row interleaved
//!   variant used by repacked weights): d = amax / 127 stored as f16; q = round-half-to-even(x * (127 / amax)),
//!   the multiplier being 127 / amax rather than 1 / d; Q8_1's s = f16(d * Σq) with the unrounded f32 d.
//! - Q8_K (`quantize_row_q8_K_ref`, which x86 uses as is): max = the signed value of largest magnitude (first one
//!   on a tie), iscale = -127 / max, q = min(127, round-half-to-even(iscale * x)), d = 1 / iscale kept in f32, and
//!   per-16 sums of q. The repacked-weight variant picks the sign of max differently when +amax and -amax both
//!   occur, which negates q and d together and so leaves every product q * d unchanged.
//!
//! Scales are stored here already widened to f32 (f16 → f32 is exact), so dot products need no conversion.

/// 32 activations quantized for Q4_0 / Q5_0 / Q8_0 weights.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// The f16 scale, as f32.
    pub d: f32,
    pub qs: [i8; 32],
}

/// 32 activations quantized for Q4_1 / Q5_1 weights; `s` carries d * Σq for the weight's offset term.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8_1 {
    /// The f16 scale, as f32.
    pub d: f32,
    /// f16(d * Σq), as f32.
    pub s: f32,
    pub qs: [i8; 32],
}

/// The activation blocks of 32 values (Q8_0 for Q4_0 / Q5_0 / Q8_0 weights, Q8_1 for Q4_1 / Q5_1).
pub trait Act32 {
    fn d(&self) -> f32;
    /// Q8_1's f16(d·Σq); unused for Q8_0.
    fn s(&self) -> f32;
    fn qs(&self) -> &[i8; 32];
}

impl Act32 for BlockQ8_0 {
    #[inline(always)]
    fn d(&self) -> f32 {
        self.d
    }
    #[inline(always)]
    fn s(&self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
}

impl Act32 for BlockQ8_1 {
    #[inline(always)]
    fn d(&self) -> f32 {
        self.d
    }
    #[inline(always)]
    fn s(&self) -> f32 {
        self.s
    }
    #[inline(always)]
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
}

/// 256 activations quantized for K-quant weights.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; 256],
    /// Sums of each 16 consecutive `qs`.
    pub bsums: [i16; 16],
}

impl Default for BlockQ8_0 {
    fn default() -> Self {
        Self {
            d: 0.0,
            qs: [0; 32],
        }
    }
}

impl Default for BlockQ8_1 {
    fn default() -> Self {
        Self {
            d: 0.0,
            s: 0.0,
            qs: [0; 32],
        }
    }
}

impl Default for BlockQ8K {
    fn default() -> Self {
        Self {
            d: 0.0,
            qs: [0; 256],
            bsums: [0; 16],
        }
    }
}

#[inline(always)]
fn f16_round(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// `_mm256_round_ps(_, _MM_ROUND_NEAREST)` then `cvtps_epi32` and the saturating packs to i8 (NaN → -128, as the
/// packs turn cvtps' 0x80000000 into -128).
#[inline(always)]
fn round_to_i8(v: f32) -> i8 {
    if v.is_nan() {
        return i8::MIN;
    }
    v.round_ties_even().clamp(-128.0, 127.0) as i8
}

/// amax of one block, as AVX2's max_ps reduction sees it (NaNs are dropped either way for finite inputs).
#[inline(always)]
fn abs_max(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, &v| m.max(v.abs()))
}

/// Both AVX2 Q8_0 and Q8_1 start the same way: the stored scale and the multiplier 127 / amax.
#[inline(always)]
fn q8_scale(x: &[f32]) -> (f32, f32) {
    let amax = abs_max(x);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (d, id)
}

super::ops::fma_dispatch! {
    /// Quantizes whole blocks of 32; `x.len()` must be `32 * out.len()`.
    pub(crate) fn quantize_q8_0_with(x: &[f32], out: &mut [BlockQ8_0]) = quantize_q8_0_impl;
}

/// The same quantizer on the fastest code path the CPU has (the results do not depend on it).
pub fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    quantize_q8_0_with(true, x, out)
}

#[inline(always)]
fn quantize_q8_0_impl(x: &[f32], out: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), out.len() * 32);
    for (xb, yb) in x.chunks_exact(32).zip(out.iter_mut()) {
        let (d, id) = q8_scale(xb);
        yb.d = f16_round(d);
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = round_to_i8(v * id);
        }
    }
}

super::ops::fma_dispatch! {
    /// Quantizes whole blocks of 32; `x.len()` must be `32 * out.len()`.
    pub(crate) fn quantize_q8_1_with(x: &[f32], out: &mut [BlockQ8_1]) = quantize_q8_1_impl;
}

/// The same quantizer on the fastest code path the CPU has (the results do not depend on it).
pub fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    quantize_q8_1_with(true, x, out)
}

#[inline(always)]
fn quantize_q8_1_impl(x: &[f32], out: &mut [BlockQ8_1]) {
    debug_assert_eq!(x.len(), out.len() * 32);
    for (xb, yb) in x.chunks_exact(32).zip(out.iter_mut()) {
        let (d, id) = q8_scale(xb);
        yb.d = f16_round(d);
        let mut sum = 0i32;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = round_to_i8(v * id);
            sum += *q as i32;
        }
        yb.s = f16_round(d * sum as f32);
    }
}

super::ops::fma_dispatch! {
    /// Quantizes whole blocks of 256; `x.len()` must be `256 * out.len()`.
    pub(crate) fn quantize_q8_k_with(x: &[f32], out: &mut [BlockQ8K]) = quantize_q8_k_impl;
}

/// The same quantizer on the fastest code path the CPU has (the results do not depend on it).
pub fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    quantize_q8_k_with(true, x, out)
}

#[inline(always)]
fn quantize_q8_k_impl(x: &[f32], out: &mut [BlockQ8K]) {
    debug_assert_eq!(x.len(), out.len() * 256);
    for (xb, yb) in x.chunks_exact(256).zip(out.iter_mut()) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *yb = BlockQ8K::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            // ggml's nearest_int (add 1.5·2^23) rounds half to even; its input never exceeds ±127 here.
            *q = (iscale * v).round_ties_even().min(127.0) as i8;
        }
        for (s, q16) in yb.bsums.iter_mut().zip(yb.qs.chunks_exact(16)) {
            *s = q16.iter().map(|&q| q as i16).sum();
        }
        yb.d = 1.0 / iscale;
    }
}
