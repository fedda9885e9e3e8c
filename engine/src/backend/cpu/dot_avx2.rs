//! AVX2 versions of the hottest dot products in [`super::dot`], with the same integer results and ggml's float
//! formula per block (only the order of the float additions differs from the portable code).
//!
//! Safety contract of every `pub unsafe fn` here: the CPU supports AVX2, FMA and F16C, and each weight row holds
//! exactly `a.len()` blocks.

use super::dot::{k_min_sum, k_scales_mins, KPath};
use super::ops::fma;
use super::q8::{Act32, BlockQ8K, BlockQ8_0};
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let h = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_f32(x: __m256) -> f32 {
    let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load32(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// 16 bytes of packed nibbles → 32 bytes: the 16 low nibbles, then the 16 high nibbles (ggml's block order).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let t = _mm_loadu_si128(p as *const __m128i);
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16(t, 4), t),
        _mm256_set1_epi8(0x0F),
    )
}

/// Byte i = 0xFF where bit i of `bits` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bytes_from_bits(bits: u32) -> __m256i {
    let spread = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), spread);
    let others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1))
}

/// Σ x·y over each group of 4 bytes, for unsigned x (< 128) and signed y: 8 exact i32 lanes. `VNNI`: as one AVX-512
/// VNNI instruction on 256-bit vectors instead of two — the same integers (no pair of products reaches i16's
/// saturation with these operands) — for code inlined into a function compiled with `avx512vnni,avx512vl`
/// (`qmatmul`'s `rows_vnni`), where the CPU has them (Zen 4, Ice Lake and later).
// No target features of its own, and always inlined: it takes its caller's (AVX2, or AVX2 with VNNI).
#[inline(always)]
unsafe fn dot_u8_i8<const VNNI: bool>(x: __m256i, y: __m256i) -> __m256i {
    if VNNI {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y)
    } else {
        _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_ptr(qs: &[i8; 32]) -> *const u8 {
    qs.as_ptr() as *const u8
}

pub use super::dot::format::*;

const fn block_bytes(kind: u8) -> usize {
    match kind {
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        Q5_1 => 24,
        _ => 34,
    }
}

/// A block's weights as bytes, ready to multiply with activations (see [`lanes`]): unsigned for the offset formats,
/// signed otherwise (then the first of the pair is |x|, the second x, whose sign moves onto the activations as ggml
/// does). Unpacked once per block, whatever the number of activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weight_bytes<const KIND: u8>(b: *const u8) -> (__m256i, __m256i) {
    let x = match KIND {
        Q4_0 => _mm256_sub_epi8(nibbles(b.add(2)), _mm256_set1_epi8(8)),
        Q4_1 => return (nibbles(b.add(4)), _mm256_setzero_si256()),
        Q5_0 => five_bits(b.add(6), b.add(2), true),
        Q5_1 => return (five_bits(b.add(8), b.add(4), false), _mm256_setzero_si256()),
        _ => load32(b.add(2)),
    };
    (_mm256_sign_epi8(x, x), x)
}

/// A block's eight integer lanes against activations `y` (ggml's lane layout).
// Its caller's target features, as `dot_u8_i8`.
#[inline(always)]
unsafe fn lanes<const KIND: u8, const VNNI: bool>((x, sign): (__m256i, __m256i), y: __m256i) -> __m256i {
    match KIND {
        Q4_1 | Q5_1 => dot_u8_i8::<VNNI>(x, y),
        _ => dot_u8_i8::<VNNI>(x, _mm256_sign_epi8(y, sign)),
    }
}

/// R weight rows (each `a.len()` blocks of KIND) against one activation row, interleaved so that the R
/// accumulator chains hide each other's latency. Per row the arithmetic is ggml's: acc = fma(d_w·d_a, lanes, acc),
/// hsum, plus Σ m·s for the offset formats (or, `repacked` Q4_0, acc = fma(Σ, d_w·d_a, acc) per block).
// Its caller's target features, as `dot_u8_i8`.
#[inline(always)]
pub unsafe fn dot32_rows<const KIND: u8, const R: usize, A: Act32, const VNNI: bool>(
    w: [&[u8]; R],
    a: &[A],
    repacked: bool,
) -> [f32; R] {
    dot32_tile::<KIND, R, 1, A, VNNI>(w, [a], repacked).map(|[x]| x)
}

/// R weight rows against C activation rows (a batch of sequences): each weight block is unpacked once for all C,
/// and every (weight row, activation row) pair gets exactly the arithmetic [`dot32_rows`] gives it alone.
// Its caller's target features, as `dot_u8_i8`.
#[inline(always)]
pub unsafe fn dot32_tile<const KIND: u8, const R: usize, const C: usize, A: Act32, const VNNI: bool>(
    w: [&[u8]; R],
    a: [&[A]; C],
    repacked: bool,
) -> [[f32; C]; R] {
    let bytes = block_bytes(KIND);
    let blocks = a.first().map_or(0, |a| a.len());
    debug_assert!(w.iter().all(|w| w.len() == blocks * bytes));
    debug_assert!(a.iter().all(|a| a.len() == blocks));
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut sacc = [[0f32; C]; R];
    #[allow(clippy::needless_range_loop)] // block i of every row at once
    for i in 0..blocks {
        // Each weight block unpacked once; each activation block loaded where it is used, so that the R·C
        // accumulators stay in registers.
        let b: [*const u8; R] = std::array::from_fn(|r| w[r].as_ptr().add(bytes * i));
        let wb: [_; R] = std::array::from_fn(|r| weight_bytes::<KIND>(b[r]));
        let d: [f32; R] = std::array::from_fn(|r| f16_at(b[r]));
        for c in 0..C {
            let y = &a[c][i];
            let qy = load32(q8_ptr(y.qs()));
            for r in 0..R {
                if KIND == Q4_1 || KIND == Q5_1 {
                    sacc[r][c] += f16_at(b[r].add(2)) * y.s();
                }
                let l = lanes::<KIND, VNNI>(wb[r], qy);
                if KIND == Q4_0 && repacked {
                    sacc[r][c] = fma(
                        store_lanes(l).iter().sum::<i32>() as f32,
                        d[r] * y.d(),
                        sacc[r][c],
                    );
                } else {
                    acc[r][c] = _mm256_fmadd_ps(
                        _mm256_set1_ps(d[r] * y.d()),
                        _mm256_cvtepi32_ps(l),
                        acc[r][c],
                    );
                }
            }
        }
    }
    let mut out = [[0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            out[r][c] = match KIND {
                Q4_0 if repacked => sacc[r][c],
                Q4_1 | Q5_1 => hsum_f32(acc[r][c]) + sacc[r][c],
                _ => hsum_f32(acc[r][c]),
            };
        }
    }
    out
}

/// A weight row of 32-value blocks unpacked once for the many activation rows of a prompt: each block's values as
/// unsigned bytes (Q5_0's v - 16 stored as v) and its scale. Unpacked again for every 8 activation rows, a prompt's
/// Q5_0 products ran ~8% slower.
#[derive(Default)]
pub struct Unpacked {
    values: Vec<__m256i>,
    d: Vec<f32>,
}

/// Unpacks a Q5_0 row (22-byte blocks) into `into`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn unpack_q5_0(w: &[u8], into: &mut Unpacked) {
    into.values.clear();
    into.d.clear();
    for b in w.chunks_exact(block_bytes(Q5_0)) {
        into.values
            .push(five_bits(b.as_ptr().add(6), b.as_ptr().add(2), false));
        into.d.push(f16_at(b.as_ptr()));
    }
}

/// R unpacked Q5_0 rows against C activation rows, each pair with [`dot32_rows`]'s bits: the integer lanes are
/// Σ v·y - Σ 16·y over each 4 bytes (ggml's Σ (v - 16)·y, exactly), the offset computed once per activation block.
/// `VNNI`: see [`dot_u8_i8`].
// Its caller's target features, as `dot_u8_i8`.
#[inline(always)]
pub unsafe fn q5_0_unpacked_tile<const R: usize, const C: usize, const VNNI: bool>(
    u: [&Unpacked; R],
    a: [&[BlockQ8_0]; C],
) -> [[f32; C]; R] {
    let blocks = u[0].d.len();
    debug_assert!(u
        .iter()
        .all(|u| u.values.len() == blocks && u.d.len() == blocks));
    debug_assert!(a.iter().all(|a| a.len() == blocks));
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    for i in 0..blocks {
        for c in 0..C {
            let y = a[c].as_ptr().add(i);
            let qy = load32((*y).qs.as_ptr() as *const u8);
            let dy = _mm256_broadcast_ss(&(*y).d);
            if VNNI {
                // -Σ 16·y per lane, then each row's Σ v·y added onto it.
                let minus_offset = _mm256_sub_epi32(
                    _mm256_setzero_si256(),
                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(16), qy),
                );
                for r in 0..R {
                    let v = *u[r].values.as_ptr().add(i);
                    let d = _mm256_mul_ps(_mm256_broadcast_ss(&*u[r].d.as_ptr().add(i)), dy);
                    let l = _mm256_dpbusd_epi32(minus_offset, v, qy);
                    acc[r][c] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(l), acc[r][c]);
                }
            } else {
                let offset = _mm256_maddubs_epi16(_mm256_set1_epi8(16), qy);
                for r in 0..R {
                    let v = *u[r].values.as_ptr().add(i);
                    let d = _mm256_mul_ps(_mm256_broadcast_ss(&*u[r].d.as_ptr().add(i)), dy);
                    let l = _mm256_madd_epi16(
                        _mm256_sub_epi16(_mm256_maddubs_epi16(v, qy), offset),
                        _mm256_set1_epi16(1),
                    );
                    acc[r][c] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(l), acc[r][c]);
                }
            }
        }
    }
    let mut out = [[0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            out[r][c] = hsum_f32(acc[r][c]);
        }
    }
    out
}

/// The 5-bit values of a Q5_0 / Q5_1 block as bytes; `high` is what a set (Q5_1) or clear (Q5_0) bit contributes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn five_bits(qs: *const u8, qh: *const u8, signed: bool) -> __m256i {
    let bits = bytes_from_bits((qh as *const u32).read_unaligned());
    let high = if signed {
        // (v | h << 4) - 16 is v - 16 = v | 0xF0 when the bit is clear, and v when it is set.
        _mm256_andnot_si256(bits, _mm256_set1_epi8(0xF0u8 as i8))
    } else {
        _mm256_and_si256(bits, _mm256_set1_epi8(0x10))
    };
    _mm256_or_si256(nibbles(qs), high)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_lanes(v: __m256i) -> [i32; 8] {
    let mut out = [0i32; 8];
    _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, v);
    out
}

/// Sum of the eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01)))
}

/// [`super::dot::k4_lanes`] for Q4_K, one vector per 64 values: nibbles × activations by maddubs, × the sub-block
/// scale.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_lanes(qs: *const u8, sc: &[u8; 8], y: &[i8; 256]) -> [__m256i; 4] {
    let low = _mm256_set1_epi8(0x0F);
    let q8 = y.as_ptr() as *const u8;
    let mut out = [_mm256_setzero_si256(); 4];
    for (c, o) in out.iter_mut().enumerate() {
        let bits = load32(qs.add(32 * c));
        let lo = _mm256_maddubs_epi16(_mm256_and_si256(bits, low), load32(q8.add(64 * c)));
        let hi = _mm256_maddubs_epi16(
            _mm256_and_si256(_mm256_srli_epi16(bits, 4), low),
            load32(q8.add(64 * c + 32)),
        );
        let lo = _mm256_madd_epi16(lo, _mm256_set1_epi16(sc[2 * c] as i16));
        let hi = _mm256_madd_epi16(hi, _mm256_set1_epi16(sc[2 * c + 1] as i16));
        *o = _mm256_add_epi32(lo, hi);
    }
    out
}

/// [`super::dot::dot_q4_k`] with the integer work in AVX2; the float steps are the same operations in the same
/// order (see [`super::dot::k4_combine`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_k(w: &[u8], a: &[BlockQ8K], path: KPath) -> f32 {
    debug_assert_eq!(w.len(), a.len() * 144);
    let mut acc = _mm256_setzero_ps();
    let mut accm = [0f32; 4];
    let (mut sacc, mut saccm) = (0f32, 0f32);
    for (blk, y) in w.chunks_exact(144).zip(a) {
        let b = blk.as_ptr();
        let (sc, mn) = k_scales_mins(&blk[4..16]);
        let (dw, dminw) = (f16_at(b), f16_at(b.add(2)));
        let chunks = q4k_lanes(b.add(16), &sc, &y.qs);
        match path {
            KPath::Vec => {
                let sumi = _mm256_add_epi32(
                    _mm256_add_epi32(chunks[0], chunks[1]),
                    _mm256_add_epi32(chunks[2], chunks[3]),
                );
                acc = _mm256_fmadd_ps(_mm256_set1_ps(y.d * dw), _mm256_cvtepi32_ps(sumi), acc);
                let dmin = -y.d * dminw;
                for (t, m) in accm.iter_mut().enumerate() {
                    let lane = mn[2 * t] as i32
                        * (y.bsums[4 * t] as i32 + y.bsums[4 * t + 1] as i32)
                        + mn[2 * t + 1] as i32
                            * (y.bsums[4 * t + 2] as i32 + y.bsums[4 * t + 3] as i32);
                    *m = fma(dmin, lane as f32, *m);
                }
            }
            KPath::RepackedGemm => {
                let (da, dmina) = (dw * y.d, dminw * y.d);
                for (c, &chunk) in chunks.iter().enumerate() {
                    sacc = fma(hsum_i32(chunk) as f32, da, sacc);
                    let m = mn[2 * c] as i32 * (y.bsums[4 * c] as i32 + y.bsums[4 * c + 1] as i32)
                        + mn[2 * c + 1] as i32
                            * (y.bsums[4 * c + 2] as i32 + y.bsums[4 * c + 3] as i32);
                    saccm = fma(m as f32, dmina, saccm);
                }
            }
            KPath::Repacked | KPath::Tiled => {
                let sumi = _mm256_add_epi32(
                    _mm256_add_epi32(chunks[0], chunks[1]),
                    _mm256_add_epi32(chunks[2], chunks[3]),
                );
                let total = hsum_i32(sumi) as f32;
                let min = k_min_sum(&y.bsums, &mn) as f32;
                if path == KPath::Tiled {
                    sacc = fma(fma(-dminw, min, dw * total), y.d, sacc);
                } else {
                    sacc = fma(total, dw * y.d, sacc);
                    saccm = fma(min, dminw * y.d, saccm);
                }
            }
        }
    }
    match path {
        KPath::Vec => hsum_f32(acc) + ((accm[0] + accm[2]) + (accm[1] + accm[3])),
        KPath::Tiled => sacc,
        KPath::Repacked | KPath::RepackedGemm => sacc - saccm,
    }
}

/// The 6-bit values (+32 offset) of half `n` of a Q6_K block (`b`): its four 32-value runs.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_values(b: *const u8, n: usize) -> [__m256i; 4] {
    let low = _mm256_set1_epi8(0x0F);
    let two = _mm256_set1_epi8(0x03);
    let ql0 = load32(b.add(64 * n));
    let ql1 = load32(b.add(64 * n + 32));
    let qh = load32(b.add(128 + 32 * n));
    // Bits 2r, 2r+1 of qh become bits 4, 5 of run r's values.
    let h0 = _mm256_slli_epi16(_mm256_and_si256(qh, two), 4);
    let h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two), 4);
    let h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two), 4);
    let h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two), 4);
    [
        _mm256_or_si256(_mm256_and_si256(ql0, low), h0),
        _mm256_or_si256(_mm256_and_si256(ql1, low), h1),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low), h2),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low), h3),
    ]
}

/// The signed 16-value scales g (low half) and g + 1 (high half) of a Q6_K block, as 16-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_scale_pair(scales: *const u8, g: usize) -> __m256i {
    _mm256_set_m128i(
        _mm_set1_epi16(*scales.add(g + 1) as i8 as i16),
        _mm_set1_epi16(*scales.add(g) as i8 as i16),
    )
}

/// [`super::dot::q6k_lanes`]: the 6-bit values with their +32 offset by maddubs, × the 16-value scales, then the
/// offset taken back per lane from the activation sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_lanes(blk: &[u8], y: &BlockQ8K) -> __m256i {
    let b = blk.as_ptr();
    let scales = &blk[192..208];
    let q8 = y.qs.as_ptr() as *const u8;
    let mut sumi = _mm256_setzero_si256();
    for n in 0..2 {
        let q = q6k_values(b, n);
        for (r, &qr) in q.iter().enumerate() {
            let sc = q6k_scale_pair(scales.as_ptr(), 8 * n + 2 * r);
            let p = _mm256_maddubs_epi16(qr, load32(q8.add(128 * n + 32 * r)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sc));
        }
    }
    let sums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
    let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(scales.as_ptr() as *const __m128i));
    let off = _mm256_slli_epi32(_mm256_madd_epi16(sums, sc16), 5);
    _mm256_sub_epi32(sumi, off)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6_k(w: &[u8], a: &[BlockQ8K], path: KPath) -> f32 {
    debug_assert_eq!(w.len(), a.len() * 210);
    let mut acc = _mm256_setzero_ps();
    let mut sacc = 0f32;
    for (blk, y) in w.chunks_exact(210).zip(a) {
        let dw = f16_at(blk.as_ptr().add(208));
        let lanes = q6k_lanes(blk, y);
        if path == KPath::Vec {
            acc = _mm256_fmadd_ps(_mm256_set1_ps(y.d * dw), _mm256_cvtepi32_ps(lanes), acc);
        } else {
            sacc = fma(dw * hsum_i32(lanes) as f32, y.d, sacc);
        }
    }
    if path == KPath::Vec {
        hsum_f32(acc)
    } else {
        sacc
    }
}

// Tiles of 2 weight rows × 4 activation rows for the K-quants' batched products. Each weight block is unpacked once
// for the four activation rows; the eight pairs' integer sums are then brought into the eight lanes of one vector
// (pair p = 4·row + activation), so each pair's float steps are one lane of a vector operation: the same
// operations, in the same order, as the pair's lone product ([`dot_q4_k`], [`dot_q6_k`]), hence the same bits.

/// Lane p of the result is the sum of `v[p]`'s eight lanes (exact: the sums are far below 2³¹).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sum_each(v: [__m256i; 8]) -> __m256i {
    // hadd works within 128-bit halves: after two rounds q0 holds v[0..4]'s low-half sums, then their high halves.
    let q0 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    let q1 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    _mm256_add_epi32(
        _mm256_permute2x128_si256(q0, q1, 0x20),
        _mm256_permute2x128_si256(q0, q1, 0x31),
    )
}

/// `[x0 ×4, x1 ×4]`: a weight row's value in its pairs' lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn per_row(x0: f32, x1: f32) -> __m256 {
    _mm256_set_m128(_mm_set1_ps(x1), _mm_set1_ps(x0))
}

/// `[y0, y1, y2, y3] ×2`: an activation row's value in its pairs' lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn per_act(y: [f32; 4]) -> __m256 {
    _mm256_set_ps(y[3], y[2], y[1], y[0], y[3], y[2], y[1], y[0])
}

fn lanes_f32(v: __m256) -> [f32; 8] {
    // SAFETY: __m256 and [f32; 8] have the same size, and every bit pattern is a valid f32.
    unsafe { std::mem::transmute(v) }
}

/// A Q4_K / Q5_K block's twelve scale bytes as 16: the eight 6-bit scales, then the eight mins ([`k_scales_mins`]
/// with 32-bit words, as ggml unpacks them).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k_scales_mins_vec(s: *const u8) -> __m128i {
    const M6: u32 = 0x3f3f_3f3f;
    const M4: u32 = 0x0f0f_0f0f;
    const M2: u32 = 0x0303_0303;
    let u = |i: usize| (s.add(4 * i) as *const u32).read_unaligned();
    let (u0, u1, u2) = (u(0), u(1), u(2));
    let sc_hi = (u2 & M4) | (((u0 >> 6) & M2) << 4);
    let mn_hi = ((u2 >> 4) & M4) | (((u1 >> 6) & M2) << 4);
    _mm_set_epi32(mn_hi as i32, (u1 & M6) as i32, sc_hi as i32, (u0 & M6) as i32)
}

/// One weight row's 64-value chunk `c` of a Q4_K block (`b`) against N activation rows: each pair's eight lanes
/// of Σ scale·q·y ([`q4k_lanes`]'s chunk c). `scales` holds the block's scales as 16-bit lanes, in both halves.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_chunk<const N: usize>(
    b: *const u8,
    scales: __m256i,
    c: usize,
    y: [*const u8; N],
) -> [__m256i; N] {
    let low = _mm256_set1_epi8(0x0F);
    let bits = load32(b.add(16 + 32 * c));
    let lo = _mm256_and_si256(bits, low);
    let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low);
    // Bytes 4c..4c+3 of the 16-bit scales: lanes 2c (low nibbles) and 2c + 1 (high), each broadcast.
    let pick = |j: i16| _mm256_set1_epi16(((2 * j + 1) << 8) | (2 * j));
    let sc_lo = _mm256_shuffle_epi8(scales, pick(2 * c as i16));
    let sc_hi = _mm256_shuffle_epi8(scales, pick(2 * c as i16 + 1));
    let mut v = [_mm256_setzero_si256(); N];
    for a in 0..N {
        let l = _mm256_maddubs_epi16(lo, load32(y[a].add(64 * c)));
        let h = _mm256_maddubs_epi16(hi, load32(y[a].add(64 * c + 32)));
        v[a] = _mm256_add_epi32(_mm256_madd_epi16(l, sc_lo), _mm256_madd_epi16(h, sc_hi));
    }
    v
}

/// Per 64-value chunk c, lane p = pair p's Σ min · bsum over the chunk's two sub-blocks, from `m[p]` (lane k:
/// m[k]·(bsums[2k] + bsums[2k+1])): lanes 2c and 2c + 1 of each, added.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunk_mins(m: [__m256i; 8]) -> [__m256; 4] {
    let h01 = _mm256_castsi256_ps(_mm256_hadd_epi32(m[0], m[1]));
    let h23 = _mm256_castsi256_ps(_mm256_hadd_epi32(m[2], m[3]));
    let h45 = _mm256_castsi256_ps(_mm256_hadd_epi32(m[4], m[5]));
    let h67 = _mm256_castsi256_ps(_mm256_hadd_epi32(m[6], m[7]));
    let (e0, e1) = (
        _mm256_shuffle_ps(h01, h23, 0x88),
        _mm256_shuffle_ps(h45, h67, 0x88),
    );
    let (o0, o1) = (
        _mm256_shuffle_ps(h01, h23, 0xDD),
        _mm256_shuffle_ps(h45, h67, 0xDD),
    );
    [
        _mm256_permute2f128_ps(e0, e1, 0x20),
        _mm256_permute2f128_ps(o0, o1, 0x20),
        _mm256_permute2f128_ps(e0, e1, 0x31),
        _mm256_permute2f128_ps(o0, o1, 0x31),
    ]
}

/// [`dot_q4_k`] with `KPath::RepackedGemm` for 2 weight rows × 4 activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4k_gemm_tile(w: [&[u8]; 2], a: [&[BlockQ8K]; 4]) -> [[f32; 4]; 2] {
    let blocks = a[0].len();
    debug_assert!(w.iter().all(|w| w.len() == blocks * 144));
    debug_assert!(a.iter().all(|a| a.len() == blocks));
    // The mins each twice, [m0, m0, m1, m1, …], to meet the bsums in pairs.
    let twice = _mm_set_epi8(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
    let (mut sacc, mut saccm) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in 0..blocks {
        let (b0, b1) = (w[0].as_ptr().add(144 * i), w[1].as_ptr().add(144 * i));
        let y = [&a[0][i], &a[1][i], &a[2][i], &a[3][i]];
        let q8 = [
            y[0].qs.as_ptr() as *const u8,
            y[1].qs.as_ptr() as *const u8,
            y[2].qs.as_ptr() as *const u8,
            y[3].qs.as_ptr() as *const u8,
        ];
        let (p0, p1) = (k_scales_mins_vec(b0.add(4)), k_scales_mins_vec(b1.add(4)));
        let scales0 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(p0));
        let scales1 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(p1));
        let mins0 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(p0, twice));
        let mins1 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(p1, twice));
        let yd = per_act([y[0].d, y[1].d, y[2].d, y[3].d]);
        let da = _mm256_mul_ps(per_row(f16_at(b0), f16_at(b1)), yd);
        let dmina = _mm256_mul_ps(per_row(f16_at(b0.add(2)), f16_at(b1.add(2))), yd);
        // Lane k of a pair's mins vector: m[k]·(bsums[2k] + bsums[2k+1]); 64-value chunk c sums lanes 2c and 2c+1.
        let mut m = [_mm256_setzero_si256(); 8];
        for c in 0..4 {
            let sums = _mm256_loadu_si256(y[c].bsums.as_ptr() as *const __m256i);
            m[c] = _mm256_madd_epi16(sums, mins0);
            m[4 + c] = _mm256_madd_epi16(sums, mins1);
        }
        for (c, chunk_min) in chunk_mins(m).into_iter().enumerate() {
            let [v0, v1, v2, v3] = q4k_chunk(b0, scales0, c, q8);
            let [v4, v5, v6, v7] = q4k_chunk(b1, scales1, c, q8);
            let sums = sum_each([v0, v1, v2, v3, v4, v5, v6, v7]);
            sacc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), da, sacc);
            saccm = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(_mm256_castps_si256(chunk_min)),
                dmina,
                saccm,
            );
        }
    }
    let out = lanes_f32(_mm256_sub_ps(sacc, saccm));
    [
        [out[0], out[1], out[2], out[3]],
        [out[4], out[5], out[6], out[7]],
    ]
}

/// [`dot_q4_k`] with `KPath::RepackedGemm` for 1 weight row × 8 activation rows (a prompt's products): each 64-value
/// chunk's nibbles unpacked once for all eight, pair p in lane p; otherwise [`q4k_gemm_tile`]'s steps.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4k_gemm_row8(w: &[u8], a: [&[BlockQ8K]; 8]) -> [f32; 8] {
    let blocks = a[0].len();
    debug_assert!(w.len() == blocks * 144);
    debug_assert!(a.iter().all(|a| a.len() == blocks));
    let twice = _mm_set_epi8(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
    let (mut sacc, mut saccm) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in 0..blocks {
        let b = w.as_ptr().add(144 * i);
        let mut q8 = [std::ptr::null::<u8>(); 8];
        let mut yd = [0f32; 8];
        for c in 0..8 {
            q8[c] = a[c][i].qs.as_ptr() as *const u8;
            yd[c] = a[c][i].d;
        }
        let yd = _mm256_set_ps(yd[7], yd[6], yd[5], yd[4], yd[3], yd[2], yd[1], yd[0]);
        let p = k_scales_mins_vec(b.add(4));
        let scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(p));
        let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(p, twice));
        let da = _mm256_mul_ps(_mm256_set1_ps(f16_at(b)), yd);
        let dmina = _mm256_mul_ps(_mm256_set1_ps(f16_at(b.add(2))), yd);
        let mut m = [_mm256_setzero_si256(); 8];
        for c in 0..8 {
            let sums = _mm256_loadu_si256(a[c][i].bsums.as_ptr() as *const __m256i);
            m[c] = _mm256_madd_epi16(sums, mins);
        }
        for (c, chunk_min) in chunk_mins(m).into_iter().enumerate() {
            let sums = sum_each(q4k_chunk(b, scales, c, q8));
            sacc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), da, sacc);
            saccm = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(_mm256_castps_si256(chunk_min)),
                dmina,
                saccm,
            );
        }
    }
    lanes_f32(_mm256_sub_ps(sacc, saccm))
}

/// One weight row's Q6_K block (`b`) against N activation rows: each pair's eight lanes ([`q6k_lanes`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_lanes_n<const N: usize>(b: *const u8, y: [&BlockQ8K; N]) -> [__m256i; N] {
    let scales = b.add(192);
    let mut v = [_mm256_setzero_si256(); N];
    for n in 0..2 {
        let q = q6k_values(b, n);
        for (r, &qr) in q.iter().enumerate() {
            let sc = q6k_scale_pair(scales, 8 * n + 2 * r);
            for c in 0..N {
                let q8 = y[c].qs.as_ptr() as *const u8;
                let p = _mm256_maddubs_epi16(qr, load32(q8.add(128 * n + 32 * r)));
                v[c] = _mm256_add_epi32(v[c], _mm256_madd_epi16(p, sc));
            }
        }
    }
    let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(scales as *const __m128i));
    for c in 0..N {
        let sums = _mm256_loadu_si256(y[c].bsums.as_ptr() as *const __m256i);
        v[c] = _mm256_sub_epi32(v[c], _mm256_slli_epi32(_mm256_madd_epi16(sums, sc16), 5));
    }
    v
}

/// [`dot_q6_k`] with `KPath::Tiled` for 2 weight rows × 4 activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6k_tiled_tile(w: [&[u8]; 2], a: [&[BlockQ8K]; 4]) -> [[f32; 4]; 2] {
    let blocks = a[0].len();
    debug_assert!(w.iter().all(|w| w.len() == blocks * 210));
    debug_assert!(a.iter().all(|a| a.len() == blocks));
    let mut sacc = _mm256_setzero_ps();
    for i in 0..blocks {
        let (b0, b1) = (w[0].as_ptr().add(210 * i), w[1].as_ptr().add(210 * i));
        let y = [&a[0][i], &a[1][i], &a[2][i], &a[3][i]];
        let [v0, v1, v2, v3] = q6k_lanes_n(b0, y);
        let [v4, v5, v6, v7] = q6k_lanes_n(b1, y);
        let total = _mm256_cvtepi32_ps(sum_each([v0, v1, v2, v3, v4, v5, v6, v7]));
        let dw = per_row(f16_at(b0.add(208)), f16_at(b1.add(208)));
        let yd = per_act([y[0].d, y[1].d, y[2].d, y[3].d]);
        sacc = _mm256_fmadd_ps(_mm256_mul_ps(dw, total), yd, sacc);
    }
    let out = lanes_f32(sacc);
    [
        [out[0], out[1], out[2], out[3]],
        [out[4], out[5], out[6], out[7]],
    ]
}

/// [`dot_q6_k`] with `KPath::Tiled` for 1 weight row × 8 activation rows (a prompt's products): each half-block's
/// 6-bit values unpacked once for all eight, pair p in lane p; otherwise [`q6k_tiled_tile`]'s steps.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6k_tiled_row8(w: &[u8], a: [&[BlockQ8K]; 8]) -> [f32; 8] {
    let blocks = a[0].len();
    debug_assert!(w.len() == blocks * 210);
    debug_assert!(a.iter().all(|a| a.len() == blocks));
    let mut sacc = _mm256_setzero_ps();
    for i in 0..blocks {
        let b = w.as_ptr().add(210 * i);
        let y = [
            &a[0][i], &a[1][i], &a[2][i], &a[3][i], &a[4][i], &a[5][i], &a[6][i], &a[7][i],
        ];
        let total = _mm256_cvtepi32_ps(sum_each(q6k_lanes_n(b, y)));
        let dw = _mm256_set1_ps(f16_at(b.add(208)));
        let yd = _mm256_set_ps(y[7].d, y[6].d, y[5].d, y[4].d, y[3].d, y[2].d, y[1].d, y[0].d);
        sacc = _mm256_fmadd_ps(_mm256_mul_ps(dw, total), yd, sacc);
    }
    lanes_f32(sacc)
}
