//! wasm SIMD128 versions of the dot products in [`super::dot`], for the worker built with
//! `-C target-feature=+simd128`: the 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and the K-quants (Q4_K,
//! Q5_K, Q6_K). They give the portable code's bits exactly: the integer lanes are exact sums (lane k: values 4k..4k+3
//! of a 32-value block or of every 32-byte run of a K-quant block, as `dot::lanes32` / `dot::k4_lanes` /
//! `dot::q6k_lanes`), and the float accumulation keeps the portable per-lane order — `acc[k] = fma(d, lane_k,
//! acc[k])` per block, then `dot::hsum_lanes`' order. The K-quant formulas whose float work is per block rather than
//! per lane (every `KPath` but `Vec`) take the SIMD lanes through `dot::k4_combine` / `dot::q6k_combine` themselves.
//!
//! wasm has no fused multiply-add, so the portable `fma` (super::libm) goes through f64: the f32 product is exact in
//! f64, the f64 sum rounds once, and narrowing it is right unless that rounding left the sum exactly halfway between
//! two f32s or the sum is subnormal in f32. Here that runs two lanes at a time in f64x2 ([`fma_f32x4`]); lanes that
//! meet one of the rare cases are redone by the scalar `fma`, so the result is the scalar's bit for bit. The same
//! fused multiply-adds serve attention's f32 dot products and value sums ([`dot_f32`], [`dot8_f32`]). The block
//! kernels skip even the per-lane checks where a row's scales prove every sum exact ([`Grain`]). This emulation is
//! still most of a block's cost, so the worker built with relaxed SIMD too takes `f32x4.relaxed_madd` instead
//! wherever the engine fuses it (`super::relaxed`): one instruction, the same bits, 2–2.7× faster per op.

pub use super::dot::format::*;
use super::dot::{self, KPath};
use super::libm::fma;
use super::q8::{Act32, BlockQ8K};
use core::arch::wasm32::*;

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

#[inline(always)]
fn load16_i8(b: &[i8]) -> v128 {
    assert!(b.len() >= 16);
    // SAFETY: 16 readable bytes (checked); v128_load has no alignment requirement.
    unsafe { v128_load(b.as_ptr() as *const v128) }
}

#[inline(always)]
fn load_i16x8(v: &[i16]) -> v128 {
    assert!(v.len() >= 8);
    // SAFETY: 8 readable i16s (checked), 16 bytes; v128_load has no alignment requirement.
    unsafe { v128_load(v.as_ptr() as *const v128) }
}

/// Byte j = 0x10 where bit j of `bits` (16 bits) is set, else 0: the fifth bit of the 5-bit formats' values.
#[inline(always)]
fn high_bits(bits: u32) -> v128 {
    let bytes = u8x16_swizzle(
        u32x4_splat(bits),
        u8x16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
    );
    let mask = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    v128_and(
        u8x16_ne(v128_and(bytes, mask), u8x16_splat(0)),
        u8x16_splat(0x10),
    )
}

/// What the 4- and 5-bit formats store of a value (0..15 or 0..31) is the value plus this.
const fn offset<const KIND: u8>() -> i8 {
    match KIND {
        Q4_0 => 8,
        Q5_0 => 16,
        _ => 0,
    }
}

/// The 4- and 5-bit formats' 32 stored values (0..31, the value plus `offset`) as two u8x16 (values 0..15, 16..31).
#[inline(always)]
fn stored_values<const KIND: u8>(b: &[u8]) -> (v128, v128) {
    let (qs, qh) = match KIND {
        Q4_0 => (2, None),
        Q4_1 => (4, None),
        Q5_0 => (6, Some(2)),
        _ => (8, Some(4)),
    };
    let t = load16(&b[qs..qs + 16]);
    let (mut lo, mut hi) = (v128_and(t, u8x16_splat(15)), u8x16_shr(t, 4));
    if let Some(at) = qh {
        let h = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        lo = v128_or(lo, high_bits(h & 0xffff));
        hi = v128_or(hi, high_bits(h >> 16));
    }
    (lo, hi)
}

/// The block's 32 signed values as two i8x16 (values 0..15, 16..31).
#[inline(always)]
fn values<const KIND: u8>(b: &[u8]) -> (v128, v128) {
    if KIND == Q8_0 {
        return (load16(&b[2..18]), load16(&b[18..34]));
    }
    let (lo, hi) = stored_values::<KIND>(b);
    match offset::<KIND>() {
        0 => (lo, hi),
        off => (
            i8x16_sub(lo, i8x16_splat(off)),
            i8x16_sub(hi, i8x16_splat(off)),
        ),
    }
}

/// Sums of byte pairs (`a`: bytes 0..7, `b`: 8..15 of 16) into sums of each group of 4 bytes.
#[inline(always)]
fn quads(a: v128, b: v128) -> v128 {
    i32x4_add(
        i32x4_shuffle::<0, 2, 4, 6>(a, b),
        i32x4_shuffle::<1, 3, 5, 7>(a, b),
    )
}

/// Σ x·y over each group of 4 bytes of 16 signed bytes: 4 exact i32 lanes.
#[inline(always)]
fn dot4(x: v128, y: v128) -> v128 {
    quads(
        i32x4_extadd_pairwise_i16x8(i16x8_extmul_low_i8x16(x, y)),
        i32x4_extadd_pairwise_i16x8(i16x8_extmul_high_i8x16(x, y)),
    )
}

/// Σ s·x·y over each pair of 16 signed bytes, for bytes 0..7 and 8..15 (`s` an i16x8 splat of the scale). x·y is
/// exact in i16, and the pair sums fit i32 for the K-quants' values (at most 6 bits) and scales (at most 8).
#[inline(always)]
fn scaled_pairs(x: v128, y: v128, s: v128) -> (v128, v128) {
    (
        i32x4_dot_i16x8(i16x8_extmul_low_i8x16(x, y), s),
        i32x4_dot_i16x8(i16x8_extmul_high_i8x16(x, y), s),
    )
}

/// The block's eight lanes against `y`, as two i32x4 (lanes 0..3, 4..7).
#[inline(always)]
fn lanes<const KIND: u8>(b: &[u8], y: &[i8; 32]) -> (v128, v128) {
    let (y0, y1) = (load16_i8(&y[..16]), load16_i8(&y[16..]));
    #[cfg(target_feature = "relaxed-simd")]
    if KIND != Q8_0 {
        return relaxed_lanes::<KIND>(b, y0, y1);
    }
    let (x0, x1) = values::<KIND>(b);
    (dot4(x0, y0), dot4(x1, y1))
}

/// `lanes` for the 4- and 5-bit formats through `i32x4.relaxed_dot_i8x16_i7x16_add_s`, whose sums of four byte
/// products are `dot4`'s lanes. Its second operand must be below 128 for a result every engine agrees on (x86's
/// pmaddubsw reads it unsigned, ARM's sdot signed), so it takes the stored values (0..31) and the offset comes off
/// as offset · (the activations' sum of the four), also exact: the integers are `dot4`'s.
#[cfg(target_feature = "relaxed-simd")]
#[inline(always)]
fn relaxed_lanes<const KIND: u8>(b: &[u8], y0: v128, y1: v128) -> (v128, v128) {
    let (x0, x1) = stored_values::<KIND>(b);
    let zero = i32x4_splat(0);
    let (mut l0, mut l1) = (
        i32x4_relaxed_dot_i8x16_i7x16_add(y0, x0, zero),
        i32x4_relaxed_dot_i8x16_i7x16_add(y1, x1, zero),
    );
    let off = offset::<KIND>();
    if off != 0 {
        let ones = i8x16_splat(1);
        let (s0, s1) = (
            i32x4_relaxed_dot_i8x16_i7x16_add(y0, ones, zero),
            i32x4_relaxed_dot_i8x16_i7x16_add(y1, ones, zero),
        );
        let shift = off.trailing_zeros();
        l0 = i32x4_sub(l0, i32x4_shl(s0, shift));
        l1 = i32x4_sub(l1, i32x4_shl(s1, shift));
    }
    (l0, l1)
}

/// Where narrowing the f64x2 sum `s = ab + c` (`ab` an exact product, `c` an f32) to f32 could differ from one
/// fused multiply-add's rounding: `s` was itself rounded (its TwoSum error is not zero) and landed exactly halfway
/// between two f32s, so rounding again could go the wrong way; or 0 < |s| < f32::MIN_POSITIVE, where f32 subnormals
/// round at another bit. Non-finite sums narrow as the scalar `fma` narrows them. (Exact halfway sums are common —
/// a quarter of the blocks of real rows, wherever d·l has 25 significant bits — and need no scalar.)
#[inline(always)]
fn needs_scalar(ab: v128, c: v128, s: v128) -> v128 {
    let halfway = i64x2_eq(
        v128_and(s, i64x2_splat(0x1fff_ffff)),
        i64x2_splat(0x1000_0000),
    );
    // 0 < |s| < MIN_POSITIVE as one unsigned compare of |s| - 1 (signed, with the sign bits flipped).
    let flip = i64x2_splat(i64::MIN);
    let magnitude = v128_and(s, i64x2_splat(i64::MAX));
    let tiny = i64x2_lt(
        v128_xor(i64x2_sub(magnitude, i64x2_splat(1)), flip),
        v128_xor(
            i64x2_splat((f32::MIN_POSITIVE as f64).to_bits() as i64 - 1),
            flip,
        ),
    );
    if !v128_any_true(halfway) {
        return tiny;
    }
    let bb = f64x2_sub(s, ab);
    let err = f64x2_add(f64x2_sub(ab, f64x2_sub(s, bb)), f64x2_sub(c, bb));
    v128_or(v128_and(halfway, f64x2_ne(err, f64x2_splat(0.0))), tiny)
}

/// fma(a, b, c) lane by lane for N groups of four f32 lanes, bit for bit the scalar `fma`: through f64, with one
/// check for all of them and the scalar where a lane needs it.
#[inline(always)]
pub(crate) fn fma_f32x4<const N: usize>(a: [v128; N], b: [v128; N], c: [v128; N]) -> [v128; N] {
    #[cfg(target_feature = "relaxed-simd")]
    if super::relaxed::fused() {
        return std::array::from_fn(|k| f32x4_relaxed_madd(a[k], b[k], c[k]));
    }
    // Lanes 0, 1 and 2, 3 of each group as f64x2: (exact product, addend, sum).
    let half = |a: v128, b: v128, c: v128| {
        let (ab, c) = (
            f64x2_mul(f64x2_promote_low_f32x4(a), f64x2_promote_low_f32x4(b)),
            f64x2_promote_low_f32x4(c),
        );
        (ab, c, f64x2_add(ab, c))
    };
    let upper = |v: v128| i32x4_shuffle::<2, 3, 2, 3>(v, v);
    let lo: [_; N] = std::array::from_fn(|k| half(a[k], b[k], c[k]));
    let hi: [_; N] = std::array::from_fn(|k| half(upper(a[k]), upper(b[k]), upper(c[k])));
    let bad = (0..N).fold(i64x2_splat(0), |m, k| {
        let ((a0, c0, s0), (a1, c1, s1)) = (lo[k], hi[k]);
        v128_or(
            m,
            v128_or(needs_scalar(a0, c0, s0), needs_scalar(a1, c1, s1)),
        )
    });
    if v128_any_true(bad) {
        return std::array::from_fn(|k| {
            let (a, b, c) = (a[k], b[k], c[k]);
            f32x4(
                fma(
                    f32x4_extract_lane::<0>(a),
                    f32x4_extract_lane::<0>(b),
                    f32x4_extract_lane::<0>(c),
                ),
                fma(
                    f32x4_extract_lane::<1>(a),
                    f32x4_extract_lane::<1>(b),
                    f32x4_extract_lane::<1>(c),
                ),
                fma(
                    f32x4_extract_lane::<2>(a),
                    f32x4_extract_lane::<2>(b),
                    f32x4_extract_lane::<2>(c),
                ),
                fma(
                    f32x4_extract_lane::<3>(a),
                    f32x4_extract_lane::<3>(b),
                    f32x4_extract_lane::<3>(c),
                ),
            )
        });
    }
    std::array::from_fn(|k| {
        i32x4_shuffle::<0, 1, 4, 5>(
            f32x4_demote_f64x2_zero(lo[k].2),
            f32x4_demote_f64x2_zero(hi[k].2),
        )
    })
}

/// What one row's accumulators have held: every product d·l of a scale and an integer lane is a multiple of
/// ulp(d), so every sum, and every accumulator (a sum rounded to f32), is a multiple of the smallest ulp seen so
/// far, 2^`min_ulp_exp`. An f64 sum below 2^53 of those units is then exact, and narrowing it to f32 is the one
/// rounding a fused multiply-add makes; and with units of at least f32::MIN_POSITIVE no non-zero sum is an f32
/// subnormal. Blocks that meet both need no per-lane check; the others take [`fma_f32x4`]'s.
#[derive(Clone, Copy)]
struct Grain {
    min_ulp_exp: i32,
}

impl Grain {
    fn new() -> Self {
        Self {
            min_ulp_exp: i32::MAX,
        }
    }

    /// Takes in the block's scale; the bits of the bound below which its sums are exact (None: check every lane).
    #[inline(always)]
    fn bound_with(&mut self, d: f32) -> Option<i64> {
        let biased = ((d.to_bits() >> 23) & 0xff) as i32;
        match biased {
            0 if d == 0.0 => {}
            0 => self.min_ulp_exp = -149,
            255 => return None,
            _ => self.min_ulp_exp = self.min_ulp_exp.min(biased - 150),
        }
        if self.min_ulp_exp == i32::MAX {
            // Only zero products so far: every sum is exactly zero.
            return Some(f64::INFINITY.to_bits() as i64);
        }
        (self.min_ulp_exp >= -126).then(|| (((self.min_ulp_exp + 53 + 1023) as u64) << 52) as i64)
    }
}

/// acc[k] = fma(d, lanes[k], acc[k]) for N groups of four i32 lanes (integers below 2^24) of one row whose
/// accumulators `grain` follows, bit for bit the scalar `fma`.
#[inline(always)]
fn acc_lanes<const N: usize>(
    grain: &mut Grain,
    d: f32,
    lanes: [v128; N],
    acc: [v128; N],
) -> [v128; N] {
    let l: [v128; N] = std::array::from_fn(|k| f32x4_convert_i32x4(lanes[k]));
    #[cfg(target_feature = "relaxed-simd")]
    if super::relaxed::fused() {
        return fma_f32x4([f32x4_splat(d); N], l, acc);
    }
    let Some(bound) = grain.bound_with(d) else {
        return fma_f32x4([f32x4_splat(d); N], l, acc);
    };
    let dd = f64x2_splat(d as f64);
    let sum = |l: v128, a: v128| {
        f64x2_add(
            f64x2_mul(dd, f64x2_promote_low_f32x4(l)),
            f64x2_promote_low_f32x4(a),
        )
    };
    let upper = |v: v128| i32x4_shuffle::<2, 3, 2, 3>(v, v);
    let lo: [v128; N] = std::array::from_fn(|k| sum(l[k], acc[k]));
    let hi: [v128; N] = std::array::from_fn(|k| sum(upper(l[k]), upper(acc[k])));
    let (magnitude, bound) = (i64x2_splat(i64::MAX), i64x2_splat(bound));
    let large = (0..N).fold(i64x2_splat(0), |m, k| {
        let big = |s: v128| i64x2_ge(v128_and(s, magnitude), bound);
        v128_or(m, v128_or(big(lo[k]), big(hi[k])))
    });
    if v128_any_true(large) {
        return fma_f32x4([f32x4_splat(d); N], l, acc);
    }
    std::array::from_fn(|k| {
        i32x4_shuffle::<0, 1, 4, 5>(
            f32x4_demote_f64x2_zero(lo[k]),
            f32x4_demote_f64x2_zero(hi[k]),
        )
    })
}

#[inline(always)]
fn load_f32x4(v: &[f32]) -> v128 {
    assert!(v.len() >= 4);
    // SAFETY: 4 readable f32s (checked), 16 bytes; v128_load has no alignment requirement.
    unsafe { v128_load(v.as_ptr() as *const v128) }
}

/// `ops::vec_dot_f32` (ggml_vec_dot_f32's AVX2 lanes: element i into lane i % 32, fused, then GGML_F32x8_REDUCE and
/// an unfused tail), eight f32x4 at a time.
#[inline(always)]
pub(crate) fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let np = n - n % 32;
    let mut acc = [f32x4_splat(0.0); 8];
    for (xc, yc) in x[..np].chunks_exact(32).zip(y[..np].chunks_exact(32)) {
        acc = fma_f32x4(
            std::array::from_fn(|k| load_f32x4(&xc[4 * k..])),
            std::array::from_fn(|k| load_f32x4(&yc[4 * k..])),
            acc,
        );
    }
    let mut lanes = [0f32; 32];
    for (k, v) in acc.iter().enumerate() {
        // SAFETY: lanes 4k..4k + 4 are inside `lanes`; v128_store has no alignment requirement.
        unsafe { v128_store(lanes[4 * k..].as_mut_ptr() as *mut v128, *v) };
    }
    let mut sum = super::ops::reduce_f32x32(&lanes);
    for i in np..n {
        sum += x[i] * y[i];
    }
    sum
}

/// tinyBLAS's f32 dot product (element i into lane i % 8, fused, then `ops::hsum8`) of two runs whose length is a
/// multiple of 8.
#[inline(always)]
pub(crate) fn dot8_f32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = [f32x4_splat(0.0); 2];
    for (xc, yc) in x[..n].chunks_exact(8).zip(y[..n].chunks_exact(8)) {
        acc = fma_f32x4(
            [load_f32x4(xc), load_f32x4(&xc[4..])],
            [load_f32x4(yc), load_f32x4(&yc[4..])],
            acc,
        );
    }
    hsum(acc[0], acc[1])
}

/// `dot::hsum_lanes` of the eight accumulators (0..3 in `a`, 4..7 in `b`), in its order.
#[inline(always)]
fn hsum(a: v128, b: v128) -> f32 {
    hsum4(f32x4_add(a, b))
}

/// (t0 + t2) + (t1 + t3), the last step of `dot::hsum_lanes`.
#[inline(always)]
fn hsum4(t: v128) -> f32 {
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
    let mut grain = Grain::new();
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
            [acc0, acc1] = acc_lanes(&mut grain, d, [l0, l1], [acc0, acc1]);
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

/// Eight i32 lanes held as lanes 0..3 in `lo` and 4..7 in `hi`, as the portable code holds them.
#[inline(always)]
fn lanes_array(lo: v128, hi: v128) -> [i32; 8] {
    [
        i32x4_extract_lane::<0>(lo),
        i32x4_extract_lane::<1>(lo),
        i32x4_extract_lane::<2>(lo),
        i32x4_extract_lane::<3>(lo),
        i32x4_extract_lane::<0>(hi),
        i32x4_extract_lane::<1>(hi),
        i32x4_extract_lane::<2>(hi),
        i32x4_extract_lane::<3>(hi),
    ]
}

/// `dot::k4_lanes` for Q4_K (`qh` None) and Q5_K, per 64 values as (lanes 0..3, lanes 4..7). A 32-byte run of
/// nibbles holds the 64 values: its low nibbles go with the first 32 activations, its high nibbles with the next 32,
/// and bytes 0..15 of the run make lanes 0..3.
#[inline(always)]
fn k4_lanes(qs: &[u8], qh: Option<&[u8]>, sc: &[u8; 8], y: &[i8; 256]) -> [(v128, v128); 4] {
    let qh = qh.map(|qh| [load16(qh), load16(&qh[16..])]);
    std::array::from_fn(|c| {
        let (slo, shi) = (
            i16x8_splat(sc[2 * c] as i16),
            i16x8_splat(sc[2 * c + 1] as i16),
        );
        let half = |h: usize| {
            let t = load16(&qs[32 * c + 16 * h..]);
            let (mut lo, mut hi) = (v128_and(t, u8x16_splat(15)), u8x16_shr(t, 4));
            if let Some(qh) = qh {
                // Bits 2c and 2c+1 of each qh byte are bit 4 of the low and of the high value.
                let bits = u8x16_shr(qh[h], 2 * c as u32);
                lo = v128_or(lo, v128_and(i8x16_shl(bits, 4), u8x16_splat(0x10)));
                hi = v128_or(hi, v128_and(i8x16_shl(bits, 3), u8x16_splat(0x10)));
            }
            let (a0, b0) = scaled_pairs(lo, load16_i8(&y[64 * c + 16 * h..]), slo);
            let (a1, b1) = scaled_pairs(hi, load16_i8(&y[64 * c + 32 + 16 * h..]), shi);
            quads(i32x4_add(a0, a1), i32x4_add(b0, b1))
        };
        (half(0), half(1))
    })
}

/// `dot::k_min_lanes` as one vector.
#[inline(always)]
fn k_min_lanes(bsums: &[i16; 16], mins: &[u8; 8]) -> v128 {
    let [l0, l1, l2, l3] = dot::k_min_lanes(bsums, mins);
    i32x4(l0, l1, l2, l3)
}

/// A Q4_K / Q5_K row: the `Vec` formula of `dot::k4_combine` with its per-lane fmas four lanes at a time
/// (`acc_lanes`), the other formulas, whose float work is per block, through `dot::k4_combine` itself.
#[inline(always)]
fn k4_dot(
    w: &[u8],
    a: &[BlockQ8K],
    block_bytes: usize,
    path: KPath,
    five: bool,
    lanes: impl Fn(&[u8], &[u8; 8], &BlockQ8K) -> [(v128, v128); 4],
) -> f32 {
    if path != KPath::Vec {
        return dot::k4_combine(w, a, block_bytes, path, five, |b, sc, y| {
            lanes(b, sc, y).map(|(lo, hi)| lanes_array(lo, hi))
        });
    }
    let (mut acc0, mut acc1, mut accm) = (f32x4_splat(0.0), f32x4_splat(0.0), f32x4_splat(0.0));
    let (mut grain, mut grain_m) = (Grain::new(), Grain::new());
    let mut saccm = 0f32;
    for (b, y) in w.chunks_exact(block_bytes).zip(a) {
        let (sc, mn) = dot::k_scales_mins(&b[4..16]);
        let (l0, l1) = lanes(b, &sc, y)
            .into_iter()
            .fold((i32x4_splat(0), i32x4_splat(0)), |(s0, s1), (lo, hi)| {
                (i32x4_add(s0, lo), i32x4_add(s1, hi))
            });
        let d = y.d * f16_at(b, 0);
        let dmin = -y.d * f16_at(b, 2);
        [acc0, acc1] = acc_lanes(&mut grain, d, [l0, l1], [acc0, acc1]);
        if five {
            saccm = fma(dmin, dot::k_min_sum(&y.bsums, &mn) as f32, saccm);
        } else {
            [accm] = acc_lanes(&mut grain_m, dmin, [k_min_lanes(&y.bsums, &mn)], [accm]);
        }
    }
    if five {
        hsum(acc0, acc1) + saccm
    } else {
        hsum(acc0, acc1) + hsum4(accm)
    }
}

/// `dot::dot_q4_k` bit for bit.
#[inline(always)]
pub fn dot_q4_k(w: &[u8], a: &[BlockQ8K], path: KPath) -> f32 {
    k4_dot(w, a, 144, path, false, |b, sc, y| {
        k4_lanes(&b[16..144], None, sc, &y.qs)
    })
}

/// `dot::dot_q5_k` bit for bit.
#[inline(always)]
pub fn dot_q5_k(w: &[u8], a: &[BlockQ8K], path: KPath) -> f32 {
    k4_dot(w, a, 176, path, true, |b, sc, y| {
        k4_lanes(&b[48..176], Some(&b[16..48]), sc, &y.qs)
    })
}

/// `dot::q6k_lanes` as (lanes 0..3, lanes 4..7). Each half of the block has four 32-value runs sharing its 64 low-
/// nibble bytes and 32 high-bit bytes, with a scale per 16 values, so each 16-byte half of a run has one scale.
#[inline(always)]
fn q6k_lanes(b: &[u8], y: &BlockQ8K) -> (v128, v128) {
    let scales = &b[192..208];
    let (low, two) = (u8x16_splat(15), u8x16_splat(0x30));
    // Pair sums of bytes 0..7 and 8..15 of the runs' first 16 bytes (lanes 0..3), then of their second (4..7);
    // all runs' are summed before the pairs become lanes.
    let mut pairs = [i32x4_splat(0); 4];
    for n in 0..2 {
        for h in 0..2 {
            let ql0 = load16(&b[64 * n + 16 * h..]);
            let ql1 = load16(&b[64 * n + 32 + 16 * h..]);
            let qh = load16(&b[128 + 32 * n + 16 * h..]);
            // Bits 2r and 2r+1 of qh are bits 4 and 5 of run r's values.
            let q = [
                v128_or(v128_and(ql0, low), v128_and(i8x16_shl(qh, 4), two)),
                v128_or(v128_and(ql1, low), v128_and(i8x16_shl(qh, 2), two)),
                v128_or(u8x16_shr(ql0, 4), v128_and(qh, two)),
                v128_or(u8x16_shr(ql1, 4), v128_and(u8x16_shr(qh, 2), two)),
            ];
            for (r, &qr) in q.iter().enumerate() {
                let s = i16x8_splat(scales[8 * n + 2 * r + h] as i8 as i16);
                let (pa, pb) = scaled_pairs(qr, load16_i8(&y.qs[128 * n + 32 * r + 16 * h..]), s);
                pairs[2 * h] = i32x4_add(pairs[2 * h], pa);
                pairs[2 * h + 1] = i32x4_add(pairs[2 * h + 1], pb);
            }
        }
    }
    // The +32 offset of the values comes off as 32·(bsums[2k]·sc[2k] + bsums[2k+1]·sc[2k+1]) in lane k.
    let sc = load16(scales);
    let off = |bsums: &[i16], sc16: v128| i32x4_shl(i32x4_dot_i16x8(load_i16x8(bsums), sc16), 5);
    (
        i32x4_sub(
            quads(pairs[0], pairs[1]),
            off(&y.bsums[..8], i16x8_extend_low_i8x16(sc)),
        ),
        i32x4_sub(
            quads(pairs[2], pairs[3]),
            off(&y.bsums[8..], i16x8_extend_high_i8x16(sc)),
        ),
    )
}

/// `dot::dot_q6_k` bit for bit: the `Vec` formula four lanes at a time, `Tiled` through `dot::q6k_combine`.
#[inline(always)]
pub fn dot_q6_k(w: &[u8], a: &[BlockQ8K], path: KPath) -> f32 {
    if path != KPath::Vec {
        return dot::q6k_combine(w, a, path, |b, y| {
            let (lo, hi) = q6k_lanes(b, y);
            lanes_array(lo, hi)
        });
    }
    let (mut acc0, mut acc1) = (f32x4_splat(0.0), f32x4_splat(0.0));
    let mut grain = Grain::new();
    for (b, y) in w.chunks_exact(210).zip(a) {
        let (l0, l1) = q6k_lanes(b, y);
        let d = y.d * f16_at(b, 208);
        [acc0, acc1] = acc_lanes(&mut grain, d, [l0, l1], [acc0, acc1]);
    }
    hsum(acc0, acc1)
}
