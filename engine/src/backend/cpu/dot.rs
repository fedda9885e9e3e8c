//! Portable dot products of one quantized weight row with one quantized activation row, with ggml's arithmetic:
//! exact integer sums per block, then ggml's per-block float formula (ggml-cpu/quants.c, `ggml_vec_dot_*`).
//! Written so that LLVM vectorises them; `qmatmul` also compiles them inside an AVX2 function.
//!
//! Every function takes `w` holding exactly `a.len()` weight blocks (the caller slices rows), so block counts agree.

use super::ops::fma;
use super::q8::{BlockQ8K, BlockQ8_0, BlockQ8_1};

/// The 32-value weight formats, as const parameters of the SIMD kernels (each instantiation keeps only its own arm).
#[cfg(any(target_arch = "x86_64", all(target_arch = "wasm32", target_feature = "simd128")))]
pub mod format {
    pub const Q4_0: u8 = 0;
    pub const Q4_1: u8 = 1;
    pub const Q5_0: u8 = 2;
    pub const Q5_1: u8 = 3;
    pub const Q8_0: u8 = 4;
}

#[inline(always)]
pub fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

#[inline(always)]
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

// ggml's AVX2 kernels for 32-value blocks sum the block's integer products into eight i32 lanes (lane k: values
// 4k..4k+3 in the block's byte order, where nibble formats put the 16 low nibbles first), convert the lanes to
// float and accumulate fma(d_w·d_a, lane, acc) per lane over the row, then add the lanes up (`hsum_lanes`). The
// portable code keeps the same lanes so both paths give ggml's bits.

/// The 32 values of a nibble-packed block in ggml's byte order: 16 low nibbles, then 16 high nibbles, plus `high`
/// bits (bit j of `qh` adds 16 to value j) for the 5-bit formats, minus `off`.
#[inline(always)]
fn unpack32(qs: &[u8], qh: Option<u32>, off: i32) -> [i32; 32] {
    std::array::from_fn(|i| {
        let nib = if i < 16 { qs[i] & 15 } else { qs[i - 16] >> 4 } as i32;
        let hi = qh.map_or(0, |h| (((h >> i) & 1) << 4) as i32);
        (nib | hi) - off
    })
}

#[inline(always)]
fn lanes32(x: &[i32; 32], y: &[i8; 32]) -> [i32; 8] {
    std::array::from_fn(|k| (0..4).map(|i| x[4 * k + i] * y[4 * k + i] as i32).sum())
}

#[inline(always)]
fn acc_lanes(acc: &mut [f32; 8], d: f32, lanes: &[i32; 8]) {
    for k in 0..8 {
        acc[k] = fma(d, lanes[k] as f32, acc[k]);
    }
}

/// `repacked`: the 8-row-interleaved kernels llama.cpp uses for Q4_0 weights with a multiple of 8 rows, which add
/// fma(Σ, d_w·d_a, acc) per block instead of accumulating lanes.
#[inline(always)]
pub fn dot_q4_0(w: &[u8], a: &[BlockQ8_0], repacked: bool) -> f32 {
    let (mut acc, mut sacc) = ([0f32; 8], 0f32);
    for (b, y) in w.chunks_exact(18).zip(a) {
        let lanes = lanes32(&unpack32(&b[2..18], None, 8), &y.qs);
        let d = f16_at(b, 0) * y.d;
        if repacked {
            sacc = fma(lanes.iter().sum::<i32>() as f32, d, sacc);
        } else {
            acc_lanes(&mut acc, d, &lanes);
        }
    }
    if repacked {
        sacc
    } else {
        hsum_lanes(&acc)
    }
}

#[inline(always)]
pub fn dot_q4_1(w: &[u8], a: &[BlockQ8_1]) -> f32 {
    let (mut acc, mut summs) = ([0f32; 8], 0f32);
    for (b, y) in w.chunks_exact(20).zip(a) {
        summs += f16_at(b, 2) * y.s;
        acc_lanes(
            &mut acc,
            f16_at(b, 0) * y.d,
            &lanes32(&unpack32(&b[4..20], None, 0), &y.qs),
        );
    }
    hsum_lanes(&acc) + summs
}

#[inline(always)]
pub fn dot_q5_0(w: &[u8], a: &[BlockQ8_0]) -> f32 {
    let mut acc = [0f32; 8];
    for (b, y) in w.chunks_exact(22).zip(a) {
        acc_lanes(
            &mut acc,
            f16_at(b, 0) * y.d,
            &lanes32(&unpack32(&b[6..22], Some(u32_at(b, 2)), 16), &y.qs),
        );
    }
    hsum_lanes(&acc)
}

#[inline(always)]
pub fn dot_q5_1(w: &[u8], a: &[BlockQ8_1]) -> f32 {
    let (mut acc, mut summs) = ([0f32; 8], 0f32);
    for (b, y) in w.chunks_exact(24).zip(a) {
        summs += f16_at(b, 2) * y.s;
        acc_lanes(
            &mut acc,
            f16_at(b, 0) * y.d,
            &lanes32(&unpack32(&b[8..24], Some(u32_at(b, 4)), 0), &y.qs),
        );
    }
    hsum_lanes(&acc) + summs
}

#[inline(always)]
pub fn dot_q8_0(w: &[u8], a: &[BlockQ8_0]) -> f32 {
    let mut acc = [0f32; 8];
    for (b, y) in w.chunks_exact(34).zip(a) {
        let x: [i32; 32] = std::array::from_fn(|i| b[2 + i] as i8 as i32);
        acc_lanes(&mut acc, f16_at(b, 0) * y.d, &lanes32(&x, &y.qs));
    }
    hsum_lanes(&acc)
}

/// The eight 6-bit scales and eight 6-bit mins packed in a Q4_K / Q5_K block's 12 scale bytes.
#[inline(always)]
pub fn k_scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 15) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

// K-quant blocks are reduced to eight i32 "lanes", exactly the integers ggml's AVX2 kernels hold in their eight
// 32-bit lanes (lane k sums bytes 4k..4k+3 of every 32-byte run), because ggml's float arithmetic works per lane.
// Then one of the float formulas below combines them, whichever ggml kernel llama.cpp runs for that case:
// - `Vec`: ggml_vec_dot_*_q8_K (one activation row, or a few): per-lane fma(d, lane, acc), hsum at the end;
// - `Tiled`: the tiled K-quant matmul (8 or more rows): per block res = d_w·Σ (- dmin_w·Σmin), acc = fma(res, d_a, acc);
// - `Repacked`: the 8-row-interleaved Q4_K kernels (weights with a multiple of 8 rows), gemv flavour (a batch's
//   last m % 4 rows, or all of m <= 3): acc = fma(Σ, d_w·d_a, acc), accm = fma(Σmin, dmin_w·d_a, accm), acc - accm;
// - `RepackedGemm`: their gemm flavour (the batch's rows in whole groups of 4 when m > 3): the same, but the two
//   fmas run once per 64 values (two sub-blocks) instead of once per block.

/// Which ggml kernel's float formula a K-quant product follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KPath {
    Vec,
    Tiled,
    Repacked,
    RepackedGemm,
}

/// Lanes of a Q4_K (`qh` None) or Q5_K block against a Q8_K block, per 64 values: Σ scale·q·y per lane.
#[inline(always)]
pub fn k4_lanes(qs: &[u8], qh: Option<&[u8]>, sc: &[u8; 8], y: &[i8; 256]) -> [[i32; 8]; 4] {
    let mut lanes = [[0i32; 8]; 4];
    for c in 0..4 {
        for l in 0..32 {
            let (mut lo, mut hi) = ((qs[32 * c + l] & 15) as i32, (qs[32 * c + l] >> 4) as i32);
            if let Some(qh) = qh {
                lo |= (((qh[l] >> (2 * c)) & 1) << 4) as i32;
                hi |= (((qh[l] >> (2 * c + 1)) & 1) << 4) as i32;
            }
            lanes[c][l / 4] += sc[2 * c] as i32 * lo * y[64 * c + l] as i32
                + sc[2 * c + 1] as i32 * hi * y[64 * c + 32 + l] as i32;
        }
    }
    lanes
}

/// Σ mins[j]·(bsums[2j] + bsums[2j+1]): the integer behind a Q4_K / Q5_K block's min term.
#[inline(always)]
pub fn k_min_sum(bsums: &[i16; 16], mins: &[u8; 8]) -> i32 {
    (0..8)
        .map(|j| mins[j] as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32))
        .sum()
}

/// The four lanes of ggml's AVX2 min term: mins[2t]·(bsums[4t] + bsums[4t+1]) + mins[2t+1]·(bsums[4t+2] + …).
#[inline(always)]
pub fn k_min_lanes(bsums: &[i16; 16], mins: &[u8; 8]) -> [i32; 4] {
    std::array::from_fn(|t| {
        mins[2 * t] as i32 * (bsums[4 * t] as i32 + bsums[4 * t + 1] as i32)
            + mins[2 * t + 1] as i32 * (bsums[4 * t + 2] as i32 + bsums[4 * t + 3] as i32)
    })
}

/// Lanes of a Q6_K block: Σ scale·(q+32)·y per lane over the four 32-value runs of each half, minus
/// 32·(bsums[2k]·sc[2k] + bsums[2k+1]·sc[2k+1]) in lane k (ggml removes the +32 offset that way).
#[inline(always)]
pub fn q6k_lanes(b: &[u8], y: &BlockQ8K) -> [i32; 8] {
    let scales = &b[192..208];
    let mut lanes = [0i32; 8];
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let q8 = &y.qs[128 * n..128 * n + 128];
        for l in 0..32 {
            let u = [
                (ql[l] & 15) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (r, &ur) in u.iter().enumerate() {
                let sc = scales[8 * n + 2 * r + l / 16] as i8 as i32;
                lanes[l / 4] += sc * ur as i32 * q8[32 * r + l] as i32;
            }
        }
    }
    for (k, lane) in lanes.iter_mut().enumerate() {
        let off = y.bsums[2 * k] as i32 * scales[2 * k] as i8 as i32
            + y.bsums[2 * k + 1] as i32 * scales[2 * k + 1] as i8 as i32;
        *lane -= off << 5;
    }
    lanes
}

#[inline(always)]
fn hsum_lanes(acc: &[f32; 8]) -> f32 {
    let t = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (t[0] + t[2]) + (t[1] + t[3])
}

/// Combines per-block lanes of a Q4_K / Q5_K row with `path`'s formula. `lanes(i)` gives block i's lanes.
#[inline(always)]
pub fn k4_combine(
    w: &[u8],
    a: &[BlockQ8K],
    block_bytes: usize,
    path: KPath,
    five: bool,
    mut lanes: impl FnMut(&[u8], &[u8; 8], &BlockQ8K) -> [[i32; 8]; 4],
) -> f32 {
    let (mut acc, mut accm) = ([0f32; 8], [0f32; 4]);
    let (mut sacc, mut saccm) = (0f32, 0f32);
    for (b, y) in w.chunks_exact(block_bytes).zip(a) {
        let (sc, mn) = k_scales_mins(&b[4..16]);
        let (dw, dminw) = (f16_at(b, 0), f16_at(b, 2));
        let chunks = lanes(b, &sc, y);
        let l: [i32; 8] = std::array::from_fn(|k| chunks.iter().map(|c| c[k]).sum());
        match path {
            KPath::RepackedGemm => {
                let (da, dmina) = (dw * y.d, dminw * y.d);
                for (c, chunk) in chunks.iter().enumerate() {
                    sacc = fma(chunk.iter().sum::<i32>() as f32, da, sacc);
                    let m = mn[2 * c] as i32 * (y.bsums[4 * c] as i32 + y.bsums[4 * c + 1] as i32)
                        + mn[2 * c + 1] as i32
                            * (y.bsums[4 * c + 2] as i32 + y.bsums[4 * c + 3] as i32);
                    saccm = fma(m as f32, dmina, saccm);
                }
            }
            KPath::Vec => {
                let d = y.d * dw;
                let dmin = -y.d * dminw;
                for k in 0..8 {
                    acc[k] = fma(d, l[k] as f32, acc[k]);
                }
                if five {
                    saccm = fma(dmin, k_min_sum(&y.bsums, &mn) as f32, saccm);
                } else {
                    let ml = k_min_lanes(&y.bsums, &mn);
                    for t in 0..4 {
                        accm[t] = fma(dmin, ml[t] as f32, accm[t]);
                    }
                }
            }
            KPath::Tiled => {
                let total: i32 = l.iter().sum();
                let res = fma(-dminw, k_min_sum(&y.bsums, &mn) as f32, dw * total as f32);
                sacc = fma(res, y.d, sacc);
            }
            KPath::Repacked => {
                let total: i32 = l.iter().sum();
                sacc = fma(total as f32, dw * y.d, sacc);
                saccm = fma(k_min_sum(&y.bsums, &mn) as f32, dminw * y.d, saccm);
            }
        }
    }
    match path {
        KPath::Vec if five => hsum_lanes(&acc) + saccm,
        KPath::Vec => hsum_lanes(&acc) + ((accm[0] + accm[2]) + (accm[1] + accm[3])),
        KPath::Tiled => sacc,
        KPath::Repacked | KPath::RepackedGemm => sacc - saccm,
    }
}

/// Combines per-block Q6_K lanes with `path`'s formula (Q6_K has no repacked kernel on x86).
#[inline(always)]
pub fn q6k_combine(
    w: &[u8],
    a: &[BlockQ8K],
    path: KPath,
    mut lanes: impl FnMut(&[u8], &BlockQ8K) -> [i32; 8],
) -> f32 {
    let mut acc = [0f32; 8];
    let mut sacc = 0f32;
    for (b, y) in w.chunks_exact(210).zip(a) {
        let dw = f16_at(b, 208);
        let l = lanes(b, y);
        if path == KPath::Vec {
            let d = y.d * dw;
            for k in 0..8 {
                acc[k] = fma(d, l[k] as f32, acc[k]);
            }
        } else {
            let total: i32 = l.iter().sum();
            sacc = fma(dw * total as f32, y.d, sacc);
        }
    }
    if path == KPath::Vec {
        hsum_lanes(&acc)
    } else {
        sacc
    }
}

#[inline(always)]
pub fn dot_q4_k(w: &[u8], a: &[BlockQ8K], path: KPath) -> f32 {
    k4_combine(w, a, 144, path, false, |b, sc, y| {
        k4_lanes(&b[16..144], None, sc, &y.qs)
    })
}

#[inline(always)]
pub fn dot_q5_k(w: &[u8], a: &[BlockQ8K], path: KPath) -> f32 {
    k4_combine(w, a, 176, path, true, |b, sc, y| {
        k4_lanes(&b[48..176], Some(&b[16..48]), sc, &y.qs)
    })
}

#[inline(always)]
pub fn dot_q6_k(w: &[u8], a: &[BlockQ8K], path: KPath) -> f32 {
    q6k_combine(w, a, path, q6k_lanes)
}
