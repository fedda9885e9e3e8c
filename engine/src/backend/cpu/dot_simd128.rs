//! wasm SIMD128 versions of the 32-value block dot products in [`super::dot`] (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), for
//! the worker built with `-C target-feature=+simd128`. They give the portable code's bits exactly: the integer lanes
//! are exact sums (lane k: values 4k..4k+3 of the block, as `dot::lanes32`), and the float accumulation keeps the
//! portable per-lane order — `acc[k] = fma(d, lane_k, acc[k])` per block, then `dot::hsum_lanes`' order.
//!
//! wasm has no fused multiply-add, so the portable `fma` (super::libm) goes through f64: the f32 product is exact in
//! f64, the f64 sum rounds once, and narrowing it is right unless the sum sits exactly halfway between two f32s, is
//! not finite, or is subnormal in f32. Here that runs on two lanes at a time in f64x2; a pair of lanes that meets
//! one of the rare cases is redone by the scalar `fma`, so the result is the scalar's bit for bit.

use super::libm::fma;
use super::q8::{BlockQ8_0, BlockQ8_1};
use core::arch::wasm32::*;

/// Which 32-value block format a kernel reads (the block's bytes: f16 d, [f16 m], [u32 qh], 16 nibble bytes or 32
/// int8s).
pub const Q4_0: u8 = 0;
pub const Q4_1: u8 = 1;
pub const Q5_0: u8 = 2;
pub const Q5_1: u8 = 3;
pub const Q8_0: u8 = 4;

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

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    super::dot::f16_at(b, i)
}

#[inline(always)]
fn load16(b: &[u8]) -> v128 {
    assert!(b.len() >= 16);
    // SAFETY: 16 readable bytes (checked); v128_load has no alignment requirement.
    unsafe { v128_load(b.as_ptr() as *const v128) }
}

/// Byte j = 0x10 where bit j of `bits` (16 bits) is set, else 0: the fifth bit of the 5-bit formats' values.
#[inline(always)]
fn high_bits(bits: u32) -> v128 {
    let bytes = u8x16_swizzle(
        u32x4_splat(bits),
        u8x16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
    );
    let mask = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    v128_and(u8x16_ne(v128_and(bytes, mask), u8x16_splat(0)), u8x16_splat(0x10))
}

/// The block's 32 signed values as two i8x16 (values 0..15, 16..31).
#[inline(always)]
fn values<const KIND: u8>(b: &[u8]) -> (v128, v128) {
    let (qs, qh, off) = match KIND {
        Q4_0 => (2, None, 8),
        Q4_1 => (4, None, 0),
        Q5_0 => (6, Some(2), 16),
        Q5_1 => (8, Some(4), 0),
        _ => return (load16(&b[2..18]), load16(&b[18..34])),
    };
    let t = load16(&b[qs..qs + 16]);
    let (mut lo, mut hi) = (v128_and(t, u8x16_splat(15)), u8x16_shr(t, 4));
    if let Some(at) = qh {
        let h = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        lo = v128_or(lo, high_bits(h & 0xffff));
        hi = v128_or(hi, high_bits(h >> 16));
    }
    if off != 0 {
        let o = i8x16_splat(off);
        (lo, hi) = (i8x16_sub(lo, o), i8x16_sub(hi, o));
    }
    (lo, hi)
}

/// Σ x·y over each group of 4 bytes of 16 signed bytes: 4 exact i32 lanes.
#[inline(always)]
fn dot4(x: v128, y: v128) -> v128 {
    let lo = i32x4_extadd_pairwise_i16x8(i16x8_extmul_low_i8x16(x, y));
    let hi = i32x4_extadd_pairwise_i16x8(i16x8_extmul_high_i8x16(x, y));
    i32x4_add(
        i32x4_shuffle::<0, 2, 4, 6>(lo, hi),
        i32x4_shuffle::<1, 3, 5, 7>(lo, hi),
    )
}

/// The block's eight lanes against `y`, as two i32x4 (lanes 0..3, 4..7).
#[inline(always)]
fn lanes<const KIND: u8>(b: &[u8], y: &[i8; 32]) -> (v128, v128) {
    let (x0, x1) = values::<KIND>(b);
    let y = y.as_slice();
    // SAFETY of the casts: i8 and u8 have the same layout.
    let y = unsafe { core::slice::from_raw_parts(y.as_ptr() as *const u8, 32) };
    (dot4(x0, load16(&y[..16])), dot4(x1, load16(&y[16..])))
}

/// fma(d, l, acc) on two f32 lanes held (promoted) as f64x2, rounded as the scalar `fma`; None when a lane needs
/// the scalar's rare cases.
#[inline(always)]
fn fma2(d: v128, l: v128, acc: v128) -> Option<v128> {
    let s = f64x2_add(f64x2_mul(d, l), acc);
    let halfway = i64x2_eq(
        v128_and(s, i64x2_splat(0x1fff_ffff)),
        i64x2_splat(0x1000_0000),
    );
    let a = f64x2_abs(s);
    let not_finite = v128_not(f64x2_lt(a, f64x2_splat(f64::INFINITY)));
    let subnormal = v128_and(
        f64x2_lt(a, f64x2_splat(f32::MIN_POSITIVE as f64)),
        f64x2_ne(s, f64x2_splat(0.0)),
    );
    if v128_any_true(v128_or(halfway, v128_or(not_finite, subnormal))) {
        None
    } else {
        Some(f32x4_demote_f64x2_zero(s))
    }
}

/// acc[k] = fma(d, lane_k, acc[k]) for four lanes (i32x4 lanes, f32x4 acc), bit for bit the scalar `fma`.
#[inline(always)]
fn acc_lanes4(d: f32, lanes: v128, acc: v128) -> v128 {
    let l = f32x4_convert_i32x4(lanes);
    let dd = f64x2_splat(d as f64);
    let hl = i32x4_shuffle::<2, 3, 2, 3>(l, l);
    let ha = i32x4_shuffle::<2, 3, 2, 3>(acc, acc);
    match (
        fma2(dd, f64x2_promote_low_f32x4(l), f64x2_promote_low_f32x4(acc)),
        fma2(dd, f64x2_promote_low_f32x4(hl), f64x2_promote_low_f32x4(ha)),
    ) {
        (Some(lo), Some(hi)) => i32x4_shuffle::<0, 1, 4, 5>(lo, hi),
        _ => f32x4(
            fma(d, f32x4_extract_lane::<0>(l), f32x4_extract_lane::<0>(acc)),
            fma(d, f32x4_extract_lane::<1>(l), f32x4_extract_lane::<1>(acc)),
            fma(d, f32x4_extract_lane::<2>(l), f32x4_extract_lane::<2>(acc)),
            fma(d, f32x4_extract_lane::<3>(l), f32x4_extract_lane::<3>(acc)),
        ),
    }
}

/// `dot::hsum_lanes` of the eight accumulators (0..3 in `a`, 4..7 in `b`), in its order.
#[inline(always)]
fn hsum(a: v128, b: v128) -> f32 {
    let t = f32x4_add(a, b);
    (f32x4_extract_lane::<0>(t) + f32x4_extract_lane::<2>(t))
        + (f32x4_extract_lane::<1>(t) + f32x4_extract_lane::<3>(t))
}

/// The dot product of one weight row of `KIND` blocks with `a`: `dot::dot_q4_0` / `dot_q4_1` / `dot_q5_0` /
/// `dot_q5_1` / `dot_q8_0` bit for bit (`repacked` only matters for Q4_0).
#[inline(always)]
pub fn dot32<const KIND: u8, A: Act32>(w: &[u8], a: &[A], repacked: bool) -> f32 {
    let bytes = match KIND {
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        Q5_1 => 24,
        _ => 34,
    };
    let (mut acc0, mut acc1) = (f32x4_splat(0.0), f32x4_splat(0.0));
    let (mut summs, mut sacc) = (0f32, 0f32);
    for (b, y) in w.chunks_exact(bytes).zip(a) {
        if KIND == Q4_1 || KIND == Q5_1 {
            summs += f16_at(b, 2) * y.s();
        }
        let (l0, l1) = lanes::<KIND>(b, y.qs());
        let d = f16_at(b, 0) * y.d();
        if KIND == Q4_0 && repacked {
            let t = i32x4_add(l0, l1);
            let total = i32x4_extract_lane::<0>(t)
                + i32x4_extract_lane::<1>(t)
                + i32x4_extract_lane::<2>(t)
                + i32x4_extract_lane::<3>(t);
            sacc = fma(total as f32, d, sacc);
        } else {
            acc0 = acc_lanes4(d, l0, acc0);
            acc1 = acc_lanes4(d, l1, acc1);
        }
    }
    if KIND == Q4_0 && repacked {
        sacc
    } else if KIND == Q4_1 || KIND == Q5_1 {
        hsum(acc0, acc1) + summs
    } else {
        hsum(acc0, acc1)
    }
}
