//! Causal (optionally sliding-window) attention over a KV cache, with the arithmetic of llama.cpp's CPU graph
//! without flash attention: kq = K·Q by `ggml_vec_dot_f32`, masked softmax by `ggml_compute_forward_soft_max_f32`,
//! then kqv = V·softmax by tinyBLAS for a batch of queries or `ggml_vec_dot_f32` for a single one.
//!
//! llama.cpp keeps the position-p key in KV cell p and runs every dot over all cells, masked ones contributing
//! exact zeros. Its SIMD sums assign cell p to lane p % 8 (and accumulator (p % 32) / 8), so the sums here walk
//! absolute positions with the same lanes and reduce them in the same order.

use super::ops::{expf_v, fma, hsum8, prefetch, vec_dot_f32};
use crate::backend::{AttentionParams, KvSpec};
use crate::{Error, Result};

/// One layer's keys and values for positions first_pos..first_pos + len. Each kv head's keys are `[position][head_dim]`
/// on their own: a query head then reads its keys as one contiguous run, which the memory prefetchers follow (a
/// decoded token's attention reads every cached position, and at a few hundred positions that is as many bytes as
/// the weights). Its values are kept transposed, `[head_dim][capacity]`, as llama.cpp keeps V without flash
/// attention: a value sum is then a dot product over positions (tinyBLAS's lanes, or ggml_vec_dot_f32's), held in
/// registers rather than in accumulators that go through memory once per cell.
pub struct CpuKvCache {
    spec: KvSpec,
    k: Vec<Vec<f32>>,
    vt: Vec<Vec<f32>>,
    /// Positions each row of `vt` has room for; a multiple of 32. Columns past the cached ones hold zeros, so a sum
    /// may run on to the end of its 8 or 32 lanes.
    cap: usize,
    /// Always a multiple of 32, so that column c of `vt` is in the lane of position c as the sums assign lanes.
    first_pos: usize,
}

impl CpuKvCache {
    pub fn new(spec: KvSpec) -> Self {
        Self {
            spec,
            k: vec![Vec::new(); spec.n_kv_heads],
            vt: vec![Vec::new(); spec.n_kv_heads],
            cap: 0,
            first_pos: 0,
        }
    }

    pub fn reset(&mut self) {
        self.k.iter_mut().chain(&mut self.vt).for_each(Vec::clear);
        self.cap = 0;
        self.first_pos = 0;
    }

    fn len(&self) -> usize {
        self.k
            .first()
            .map_or(0, |k| k.len() / self.spec.head_dim.max(1))
    }

    /// Row `dd` of kv head `g`'s values from column `col`, `span` of them.
    fn values(&self, g: usize, dd: usize, col: usize, span: usize) -> &[f32] {
        &self.vt[g][dd * self.cap + col..][..span]
    }

    /// Appends `rows` positions of keys and values, each `[kv head][head_dim]`.
    fn append(&mut self, k: &[f32], v: &[f32]) {
        let d = self.spec.head_dim.max(1);
        let (len, rows) = (self.len(), k.len() / (d * self.spec.n_kv_heads).max(1));
        if len + rows > self.cap {
            // Doubling keeps appends amortised O(1); 32 aligns every sum's last lanes inside the rows.
            let cap = (len + rows).next_power_of_two().max(64);
            for vt in &mut self.vt {
                let mut grown = vec![0f32; d * cap];
                if len > 0 {
                    for (new, old) in grown.chunks_exact_mut(cap).zip(vt.chunks_exact(self.cap)) {
                        new[..len].copy_from_slice(&old[..len]);
                    }
                }
                *vt = grown;
            }
            self.cap = cap;
        }
        for (i, (kr, vr)) in k.chunks_exact(d).zip(v.chunks_exact(d)).enumerate() {
            let (t, g) = (i / self.spec.n_kv_heads, i % self.spec.n_kv_heads);
            self.k[g].extend_from_slice(kr);
            for (row, &x) in self.vt[g].chunks_exact_mut(self.cap).zip(vr) {
                row[len + t] = x;
            }
        }
    }

    /// Forgets the first `n` cached positions (a multiple of 32).
    fn drop_front(&mut self, n: usize) {
        debug_assert_eq!(n % 32, 0);
        let (d, len) = (self.spec.head_dim, self.len());
        for k in &mut self.k {
            k.drain(..n * d);
        }
        for vt in &mut self.vt {
            for row in vt.chunks_exact_mut(self.cap) {
                row.copy_within(n..len, 0);
                row[len - n..len].fill(0.0);
            }
        }
        self.first_pos += n;
    }
}

/// Appends `k`, `v` (`rows` positions from `start_pos`) to the cache, then attends `q` (`[rows, n_heads·head_dim]`)
/// over every visible cached position; returns `[rows, n_heads·head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    simd: bool,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    rows: usize,
    cache: &mut CpuKvCache,
    p: &AttentionParams,
    start_pos: usize,
) -> Result<Vec<f32>> {
    let (hq, hkv, d) = (p.n_heads, p.n_kv_heads, p.head_dim);
    if hkv == 0 || hq % hkv != 0 || hkv != cache.spec.n_kv_heads || d != cache.spec.head_dim {
        return Err(Error::Backend(format!(
            "attention with {hq} query heads over {hkv} kv heads of size {d} on a cache for {} heads of size {}",
            cache.spec.n_kv_heads, cache.spec.head_dim
        )));
    }
    let kv_row = hkv * d;
    if q.len() != rows * hq * d || k.len() != rows * kv_row || v.len() != rows * kv_row {
        return Err(Error::Backend(
            "attention inputs do not match their head counts".into(),
        ));
    }
    if cache.first_pos + cache.len() != start_pos {
        return Err(Error::Backend(format!(
            "KV cache holds positions up to {} but the batch starts at {start_pos}",
            cache.first_pos + cache.len()
        )));
    }
    if start_pos + rows > cache.spec.max_positions {
        return Err(Error::InvalidArgument(format!(
            "the context is full: {} positions do not fit in {}",
            start_pos + rows,
            cache.spec.max_positions
        )));
    }
    cache.append(k, v);

    let group = hq / hkv;
    let visible_from = |qpos: usize| {
        p.window
            .map_or(0, |w| (qpos + 1).saturating_sub(w))
            .max(cache.first_pos)
    };
    let mut out = super::zeroed(rows * hq * d);
    if rows == 1 {
        decode(
            simd,
            q,
            cache,
            p,
            visible_from(start_pos),
            start_pos,
            &mut out,
        );
    } else {
        // llama.cpp's kqv goes through tinyBLAS when there are several queries and the head size suits its 4-row
        // tiles.
        let batch = d % 4 == 0;
        // One job per position and kv head: the query heads sharing a kv head read each key and value once
        // between them (a head's keys and values outgrow L2 at a few hundred positions).
        let job = |t: usize, g: usize, o: &mut [f32]| {
            let qpos = start_pos + t;
            group_heads(
                simd,
                &q[(t * hq + g * group) * d..][..group * d],
                cache,
                g,
                visible_from(qpos),
                qpos,
                p,
                batch,
                o,
            );
        };
        for_each_head(&mut out, rows, hkv, group * d, job);
    }

    // Keep only what a later query can still see.
    if let Some(w) = cache.spec.window {
        let keep_from = (start_pos + rows + 1)
            .saturating_sub(w)
            .max(cache.first_pos);
        // Whole blocks of 32, so that positions keep their lanes; compacting only once the dead prefix is as long as
        // the window keeps appends amortised O(1).
        let drop = (keep_from - cache.first_pos) / 32 * 32;
        if drop >= w.max(64) {
            cache.drop_front(drop);
        }
    }
    Ok(out)
}

#[cfg(threaded)]
/// Runs `job(row, head, out)` for every `size`-value piece of `out`, `heads` per row.
fn for_each_head(
    out: &mut [f32],
    rows: usize,
    heads: usize,
    size: usize,
    job: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    // Small problems are not worth waking the pool for.
    if rows * heads < 2 {
        out.chunks_exact_mut(size)
            .enumerate()
            .for_each(|(i, o)| job(i / heads, i % heads, o));
    } else {
        out.par_chunks_exact_mut(size)
            .enumerate()
            .for_each(|(i, o)| job(i / heads, i % heads, o));
    }
}

#[cfg(not(threaded))]
fn for_each_head(
    out: &mut [f32],
    _rows: usize,
    heads: usize,
    size: usize,
    job: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    out.chunks_exact_mut(size)
        .enumerate()
        .for_each(|(i, o)| job(i / heads, i % heads, o));
}

/// The two inner loops of a head whose shape decides the bits: q·k (`ggml_vec_dot_f32`) and exp over 8 lanes
/// (`ggml_v_expf`), portable or with AVX2 intrinsics (the same operations in the same order).
trait HeadOps {
    fn dot(x: &[f32], y: &[f32]) -> f32;
    fn exp8(x: &mut [f32; 8]);
    /// `dot(keys[k], qs[h])` for every pair: the same sums, several pairs per load of a key or a query.
    #[inline(always)]
    fn dot_tile<const K: usize, const Q: usize>(
        keys: [&[f32]; K],
        qs: [&[f32]; Q],
    ) -> [[f32; Q]; K] {
        let mut out = [[0f32; Q]; K];
        for k in 0..K {
            for h in 0..Q {
                out[k][h] = Self::dot(keys[k], qs[h]);
            }
        }
        out
    }
    /// tinyBLAS's dot product (element i into lane i % 8 by fused multiply-add, then [`hsum8`]) of two runs whose
    /// length is a multiple of 8.
    #[inline(always)]
    fn dot8(x: &[f32], y: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        for (xc, yc) in x.chunks_exact(8).zip(y.chunks_exact(8)) {
            for l in 0..8 {
                acc[l] = fma(xc[l], yc[l], acc[l]);
            }
        }
        hsum8(&acc)
    }
    /// `dot8(xs[k], ys[h])` for every pair: the same sums, several pairs per load.
    #[inline(always)]
    fn dot8_tile<const K: usize, const Q: usize>(
        xs: [&[f32]; K],
        ys: [&[f32]; Q],
    ) -> [[f32; Q]; K] {
        let mut out = [[0f32; Q]; K];
        for k in 0..K {
            for h in 0..Q {
                out[k][h] = Self::dot8(xs[k], ys[h]);
            }
        }
        out
    }
}

struct Portable;

impl HeadOps for Portable {
    #[inline(always)]
    fn dot(x: &[f32], y: &[f32]) -> f32 {
        vec_dot_f32(x, y)
    }
    #[inline(always)]
    fn exp8(x: &mut [f32; 8]) {
        x.iter_mut().for_each(|v| *v = expf_v(*v));
    }
}

/// The wasm build with SIMD128: the fused multiply-adds (emulated through f64 on wasm) four lanes at a time.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
struct Simd128;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl HeadOps for Simd128 {
    #[inline(always)]
    fn dot(x: &[f32], y: &[f32]) -> f32 {
        super::dot_simd128::dot_f32(x, y)
    }
    #[inline(always)]
    fn exp8(x: &mut [f32; 8]) {
        Portable::exp8(x)
    }
    #[inline(always)]
    fn dot8(x: &[f32], y: &[f32]) -> f32 {
        super::dot_simd128::dot8_f32(x, y)
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl HeadOps for Avx2 {
    #[inline(always)]
    fn dot(x: &[f32], y: &[f32]) -> f32 {
        // SAFETY: only instantiated in `head_avx2`, which runs when the CPU has AVX2 and FMA.
        unsafe { avx2::dot_f32(x, y) }
    }
    #[inline(always)]
    fn dot_tile<const K: usize, const Q: usize>(
        keys: [&[f32]; K],
        qs: [&[f32]; Q],
    ) -> [[f32; Q]; K] {
        // SAFETY: as above.
        unsafe { avx2::dot_f32_tile(keys, qs) }
    }
    #[inline(always)]
    fn exp8(x: &mut [f32; 8]) {
        // SAFETY: as above.
        unsafe { avx2::exp8(x) }
    }
    #[inline(always)]
    fn dot8_tile<const K: usize, const Q: usize>(
        xs: [&[f32]; K],
        ys: [&[f32]; Q],
    ) -> [[f32; Q]; K] {
        // SAFETY: as above.
        unsafe { avx2::dot8_tile(xs, ys) }
    }
}

/// The query heads of kv head `g` (`qs`: `[head][head_dim]`) at position `qpos` over cached positions lo..=qpos,
/// into `out` (`[head][head_dim]`). Each head gets exactly the operations it would alone; they are interleaved so
/// that every key and value is read once for the group.
#[allow(clippy::too_many_arguments)]
fn group_heads(
    simd: bool,
    qs: &[f32],
    cache: &CpuKvCache,
    g: usize,
    lo: usize,
    qpos: usize,
    p: &AttentionParams,
    batch: bool,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if simd && super::ops::fma_available() {
        // SAFETY: the CPU supports AVX2 and FMA.
        unsafe { group_heads_avx2(qs, cache, g, lo, qpos, p, batch, out) };
        return;
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if simd {
        group_heads_impl::<Simd128>(qs, cache, g, lo, qpos, p, batch, out);
        return;
    }
    let _ = simd;
    group_heads_impl::<Portable>(qs, cache, g, lo, qpos, p, batch, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn group_heads_avx2(
    qs: &[f32],
    cache: &CpuKvCache,
    g: usize,
    lo: usize,
    qpos: usize,
    p: &AttentionParams,
    batch: bool,
    out: &mut [f32],
) {
    group_heads_impl::<Avx2>(qs, cache, g, lo, qpos, p, batch, out);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn group_heads_impl<H: HeadOps>(
    qs: &[f32],
    cache: &CpuKvCache,
    g: usize,
    lo: usize,
    qpos: usize,
    p: &AttentionParams,
    batch: bool,
    out: &mut [f32],
) {
    let d = p.head_dim;
    let heads = qs.len() / d;
    let keys = &cache.k[g];
    let base = |pos: usize| (pos - cache.first_pos) * d;
    let cells = qpos + 1 - lo;
    // tinyBLAS (a batch of queries) sums cell p in lane p % 8, ggml_vec_dot_f32 (otherwise) in lane p % 32: the
    // weights run over whole blocks of lanes, zero outside lo..=qpos.
    let lanes = if batch { 8 } else { 32 };
    let from = lo - lo % lanes;
    let span = (qpos + 1).next_multiple_of(lanes) - from;
    let off = lo - from;

    // (Plain loops, not iterator closures: closures are not compiled with the caller's AVX2 + FMA features.)
    // Weights `[head][span]`.
    let mut w = vec![0f32; heads * span];
    cell_scores::<H>(
        |i| &keys[base(lo + i)..][..d],
        cells,
        qs,
        p,
        &mut w,
        |h, i| h * span + off + i,
        |_| {},
    );
    for h in 0..heads {
        softmax::<H>(&mut w[h * span + off..][..cells], lo, qpos);
    }

    let col = from - cache.first_pos;
    let mut sums = vec![0f32; d * heads];
    value_sums::<H>(
        |dd| cache.values(g, dd, col, span),
        &w,
        span,
        batch,
        &mut sums,
    );
    for (h, out) in out.chunks_exact_mut(d).enumerate() {
        for (dd, o) in out.iter_mut().enumerate() {
            *o = sums[dd * heads + h];
        }
    }
}

/// Each value row's (`row(r)`, r in 0..out.len() / heads) weighted sum for each head's weights (`w`, `[head][span]`),
/// into `out` (`[row][head]`): tinyBLAS's sum when `batch`, ggml_vec_dot_f32's otherwise. Rows go in tiles against
/// up to four heads (Gemma 3's groups are 4 heads, SmolLM2's 3).
#[inline(always)]
fn value_sums<'a, H: HeadOps>(
    row: impl Fn(usize) -> &'a [f32],
    w: &[f32],
    span: usize,
    batch: bool,
    out: &mut [f32],
) {
    let heads = w.len() / span;
    match heads {
        // Rows per tile: enough independent sums to hide the fused multiply-add's latency, few enough to stay in
        // AVX2's 16 registers.
        4 => value_tiles::<H, 4, 3>(row, w, span, batch, out),
        3 => value_tiles::<H, 3, 3>(row, w, span, batch, out),
        2 => value_tiles::<H, 2, 4>(row, w, span, batch, out),
        1 => value_tiles::<H, 1, 4>(row, w, span, batch, out),
        _ => {
            for (r, o) in out.chunks_exact_mut(heads).enumerate() {
                let v = row(r);
                for (h, o) in o.iter_mut().enumerate() {
                    let w = &w[h * span..][..span];
                    *o = if batch { H::dot8(v, w) } else { H::dot(v, w) };
                }
            }
        }
    }
}

#[inline(always)]
fn value_tiles<'a, H: HeadOps, const Q: usize, const K: usize>(
    row: impl Fn(usize) -> &'a [f32],
    w: &[f32],
    span: usize,
    batch: bool,
    out: &mut [f32],
) {
    let mut ws = [&w[..0]; Q];
    for (h, ws) in ws.iter_mut().enumerate() {
        *ws = &w[h * span..][..span];
    }
    let rows = out.len() / Q;
    let mut r = 0;
    while r + K <= rows {
        let mut v = [&w[..0]; K];
        for (k, v) in v.iter_mut().enumerate() {
            *v = row(r + k);
        }
        let s = if batch {
            H::dot8_tile(v, ws)
        } else {
            H::dot_tile(v, ws)
        };
        out[r * Q..][..K * Q].copy_from_slice(s.as_flattened());
        r += K;
    }
    for r in r..rows {
        let v = [row(r)];
        let s = if batch {
            H::dot8_tile(v, ws)
        } else {
            H::dot_tile(v, ws)
        };
        out[r * Q..][..Q].copy_from_slice(s.as_flattened());
    }
}

/// The scores of cells 0..cells (`key(i)`) for every query head of `qs` (`[head][head_dim]`), each into
/// `out[at(head, cell)]`; `ahead(i)` runs just before cell i is read (the decode loop's prefetches). Several cells
/// against up to four heads per pass, enough independent sums to hide the fused multiply-add's latency within AVX2's
/// 16 registers: 2 × 4 for Gemma 3's groups of 4 heads, 3 × 3 for SmolLM2's 3.
#[inline(always)]
fn cell_scores<'a, H: HeadOps>(
    key: impl Fn(usize) -> &'a [f32],
    cells: usize,
    qs: &[f32],
    p: &AttentionParams,
    out: &mut [f32],
    at: impl Fn(usize, usize) -> usize,
    ahead: impl Fn(usize),
) {
    if qs.len() / p.head_dim == 3 {
        cell_scores_by::<H, 3>(key, cells, qs, p, out, at, ahead)
    } else {
        cell_scores_by::<H, 2>(key, cells, qs, p, out, at, ahead)
    }
}

#[inline(always)]
fn cell_scores_by<'a, H: HeadOps, const K: usize>(
    key: impl Fn(usize) -> &'a [f32],
    cells: usize,
    qs: &[f32],
    p: &AttentionParams,
    out: &mut [f32],
    at: impl Fn(usize, usize) -> usize,
    ahead: impl Fn(usize),
) {
    let d = p.head_dim;
    let heads = qs.len() / d;
    let mut i = 0;
    while i + K <= cells {
        let mut keys = [&qs[..0]; K];
        for (k, keys) in keys.iter_mut().enumerate() {
            ahead(i + k);
            *keys = key(i + k);
        }
        let mut h = 0;
        while h + 4 <= heads {
            heads_scores::<H, K, 4>(keys, qs, h, p, out, |h, k| at(h, i + k));
            h += 4;
        }
        match heads - h {
            3 => heads_scores::<H, K, 3>(keys, qs, h, p, out, |h, k| at(h, i + k)),
            2 => heads_scores::<H, K, 2>(keys, qs, h, p, out, |h, k| at(h, i + k)),
            1 => heads_scores::<H, K, 1>(keys, qs, h, p, out, |h, k| at(h, i + k)),
            _ => {}
        }
        i += K;
    }
    for i in i..cells {
        for h in 0..heads {
            out[at(h, i)] = score::<H>(key(i), &qs[h * d..][..d], p);
        }
    }
}

/// The scores of the K cells `keys` for query heads h..h + Q of `qs`, into `out[at(head, which key)]`.
#[inline(always)]
fn heads_scores<H: HeadOps, const K: usize, const Q: usize>(
    keys: [&[f32]; K],
    qs: &[f32],
    h: usize,
    p: &AttentionParams,
    out: &mut [f32],
    at: impl Fn(usize, usize) -> usize,
) {
    let d = p.head_dim;
    let mut q = [&qs[..0]; Q];
    for (j, q) in q.iter_mut().enumerate() {
        *q = &qs[(h + j) * d..][..d];
    }
    let s = H::dot_tile(keys, q);
    for (k, s) in s.iter().enumerate() {
        for (j, &s) in s.iter().enumerate() {
            out[at(h + j, k)] = scaled(s, p);
        }
    }
}

/// One cell's score, scaled (and soft-capped) as ggml does: kq · scale, then cap · tanh(kq / cap) computed as a
/// multiplication by 1 / cap.
#[inline(always)]
fn score<H: HeadOps>(key: &[f32], q: &[f32], p: &AttentionParams) -> f32 {
    scaled(H::dot(key, q), p)
}

/// A raw q·k as [`score`] finishes it.
#[inline(always)]
fn scaled(kq: f32, p: &AttentionParams) -> f32 {
    let s = kq * p.scale;
    match p.softcap {
        Some(cap) => (s * (1.0 / cap)).tanh() * cap,
        None => s,
    }
}

/// `ggml_vec_soft_max_f32` over the scores of cells lo..=qpos: exp in lanes of 8 cells aligned to absolute
/// positions, each chunk's lanes reduced and added to an f64 sum. Masked cells enter as -inf - max, which
/// ggml_v_expf turns into exactly 0.
#[inline(always)]
fn softmax<H: HeadOps>(w: &mut [f32], lo: usize, qpos: usize) {
    let max = w.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut sum = 0f64;
    let mut chunk_start = lo - lo % 8;
    while chunk_start <= qpos {
        let mut lanes = [f32::NEG_INFINITY; 8];
        for (lane, pos) in (chunk_start..chunk_start + 8).enumerate() {
            if pos >= lo && pos <= qpos {
                lanes[lane] = w[pos - lo] - max;
            }
        }
        H::exp8(&mut lanes);
        for (lane, pos) in (chunk_start..chunk_start + 8).enumerate() {
            if pos >= lo && pos <= qpos {
                w[pos - lo] = lanes[lane];
            }
        }
        sum += hsum8(&lanes) as f64;
        chunk_start += 8;
    }
    let inv = (1.0 / sum) as f32;
    for x in w.iter_mut() {
        *x *= inv;
    }
}

/// A decoded token's attention (one query), with the bits of the per-head path (`ggml_vec_dot_f32` over the
/// cells for both products) but less memory traffic and even work: the query heads that share a kv head read each
/// cached key and value once between them, the scores are split over ranges of positions and the values over
/// ggml's 32 accumulator lanes (each lane still sums its cells in position order), so Gemma 3's single kv head keeps
/// every thread busy too.
fn decode(
    simd: bool,
    q: &[f32],
    cache: &CpuKvCache,
    p: &AttentionParams,
    lo: usize,
    qpos: usize,
    out: &mut [f32],
) {
    let (hq, hkv, d) = (p.n_heads, p.n_kv_heads, p.head_dim);
    let group = hq / hkv;
    let n = qpos + 1 - lo;
    let threads = super::threads();
    // Waking the pool costs more than a short context's whole attention.
    let parallel = threads > 1 && n >= 64;
    let ctx = DecodeCtx {
        p,
        group,
        first_pos: cache.first_pos,
        lo,
        qpos,
    };

    // Scores, `[kv head][cell][query head of its group]`, in ranges of at least 64 cells.
    let ranges = if parallel {
        (2 * threads).div_ceil(hkv).min(n / 64).max(1)
    } else {
        1
    };
    let span = n.div_ceil(ranges);
    let mut scores = vec![0f32; hkv * n * group];
    let mut jobs = Vec::new();
    for (g, s) in scores.chunks_mut(n * group).enumerate() {
        for (r, s) in s.chunks_mut(span * group).enumerate() {
            jobs.push(Part::Scores {
                q: &q[g * group * d..][..group * d],
                keys: &cache.k[g],
                from: lo + r * span,
                out: s,
            });
        }
    }
    run_parts(simd, parallel, jobs, &ctx);

    // Softmax per query head, `[query head][span]`: ggml_vec_dot_f32 puts cell p in lane p % 32, so the weights
    // run over whole blocks of 32 positions, zero outside lo..=qpos.
    let from = lo - lo % 32;
    let span = (qpos + 1).next_multiple_of(32) - from;
    let off = lo - from;
    let mut w = vec![0f32; hq * span];
    for (h, wh) in w.chunks_exact_mut(span).enumerate() {
        let (g, hg) = (h / group, h % group);
        for (i, x) in wh[off..][..n].iter_mut().enumerate() {
            *x = scores[(g * n + i) * group + hg];
        }
    }
    let jobs = w
        .chunks_exact_mut(span)
        .map(|w| Part::Softmax {
            w: &mut w[off..][..n],
        })
        .collect();
    run_parts(simd, parallel, jobs, &ctx);

    // Values: `[kv head][head_dim][query head of its group]`, in ranges of value rows.
    let splits = if parallel {
        (2 * threads).div_ceil(hkv).min(d / 8).max(1)
    } else {
        1
    };
    let rows = d.div_ceil(splits);
    let mut sums = vec![0f32; hkv * d * group];
    let mut jobs = Vec::new();
    for (g, s) in sums.chunks_mut(d * group).enumerate() {
        for (r, s) in s.chunks_mut(rows * group).enumerate() {
            jobs.push(Part::Values {
                w: &w[g * group * span..][..group * span],
                cache,
                g,
                first_row: r * rows,
                col: from - cache.first_pos,
                out: s,
            });
        }
    }
    run_parts(simd, parallel, jobs, &ctx);

    for (h, o) in out.chunks_exact_mut(d).enumerate() {
        let (g, hg) = (h / group, h % group);
        for (dd, o) in o.iter_mut().enumerate() {
            *o = sums[(g * d + dd) * group + hg];
        }
    }
}

/// How many cached positions ahead of the one being read the decode loops ask for keys.
const AHEAD: usize = 8;

/// What every part of a decode step shares.
struct DecodeCtx<'a> {
    p: &'a AttentionParams,
    group: usize,
    first_pos: usize,
    lo: usize,
    qpos: usize,
}

/// One piece of a decode step's work, run on its own thread.
enum Part<'a> {
    /// Scores of cells from..from + out.len() / group for the group's queries `q` (`[group][head_dim]`).
    Scores {
        q: &'a [f32],
        keys: &'a [f32],
        from: usize,
        out: &'a mut [f32],
    },
    /// One query head's softmax, in place.
    Softmax { w: &'a mut [f32] },
    /// The group's weights `w` (`[group][span]`, from column `col`) times kv head `g`'s value rows from
    /// `first_row`, into `out` (`[row][group]`).
    Values {
        w: &'a [f32],
        cache: &'a CpuKvCache,
        g: usize,
        first_row: usize,
        col: usize,
        out: &'a mut [f32],
    },
}

fn run_parts(simd: bool, parallel: bool, parts: Vec<Part>, ctx: &DecodeCtx) {
    let run = |part: Part| {
        #[cfg(target_arch = "x86_64")]
        if simd && super::ops::fma_available() {
            // SAFETY: the CPU supports AVX2 and FMA.
            unsafe { part_avx2(part, ctx) };
            return;
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        if simd {
            part_impl::<Simd128>(part, ctx);
            return;
        }
        let _ = simd;
        part_impl::<Portable>(part, ctx);
    };
    if parallel {
        super::tasks::for_each_task(parts, run);
    } else {
        parts.into_iter().for_each(run);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn part_avx2(part: Part, ctx: &DecodeCtx) {
    part_impl::<Avx2>(part, ctx);
}

#[inline(always)]
fn part_impl<H: HeadOps>(part: Part, ctx: &DecodeCtx) {
    let d = ctx.p.head_dim;
    let base = |pos: usize| (pos - ctx.first_pos) * d;
    match part {
        Part::Scores { q, keys, from, out } => {
            let (cells, group) = (out.len() / ctx.group, ctx.group);
            let last = (from + cells).saturating_sub(1);
            cell_scores::<H>(
                |i| &keys[base(from + i)..][..d],
                cells,
                q,
                ctx.p,
                out,
                |hg, i| i * group + hg,
                |i| prefetch(keys, base((from + i + AHEAD).min(last)), d),
            );
        }
        Part::Softmax { w } => softmax::<H>(w, ctx.lo, ctx.qpos),
        Part::Values {
            w,
            cache,
            g,
            first_row,
            col,
            out,
        } => {
            let span = w.len() / ctx.group;
            value_sums::<H>(
                |r| cache.values(g, first_row + r, col, span),
                w,
                span,
                false,
                out,
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// ggml_vec_dot_f32 with its own AVX2 code: four 8-lane FMA accumulators over chunks of 32, GGML_F32x8_REDUCE,
    /// then the tail one product at a time.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
        dot_f32_tile([x], [y])[0][0]
    }

    /// [`dot_f32`] for every (key, query) pair. Each of its four accumulators only ever sees the chunks at one offset
    /// in 32, so they are built one after the other, the K·Q pairs' side by side (K + Q loads for K·Q fused
    /// multiply-adds, K·Q independent chains), then reduced as `dot_f32` reduces them.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32_tile<const K: usize, const Q: usize>(
        keys: [&[f32]; K],
        qs: [&[f32]; Q],
    ) -> [[f32; Q]; K] {
        let n = keys
            .iter()
            .map(|k| k.len())
            .chain(qs.iter().map(|q| q.len()))
            .min()
            .unwrap_or(0);
        let np = n - n % 32;
        // GGML_F32x8_REDUCE's first step, (acc0 + acc2) + (acc1 + acc3), as the accumulators are built (no array of
        // all four: zeroing one was a memset call per tile).
        let add = |x: [[__m256; Q]; K], y: [[__m256; Q]; K]| {
            let mut s = x;
            for k in 0..K {
                for h in 0..Q {
                    s[k][h] = _mm256_add_ps(x[k][h], y[k][h]);
                }
            }
            s
        };
        let even = add(
            fma_chunks(&keys, &qs, 0, 32, np),
            fma_chunks(&keys, &qs, 16, 32, np),
        );
        let odd = add(
            fma_chunks(&keys, &qs, 8, 32, np),
            fma_chunks(&keys, &qs, 24, 32, np),
        );
        let sums = add(even, odd);
        let mut out = [[0f32; Q]; K];
        for k in 0..K {
            for h in 0..Q {
                let s = sums[k][h];
                let t0 = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
                let t1 = _mm_hadd_ps(t0, t0);
                let mut sum = _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
                for x in np..n {
                    sum += keys[k][x] * qs[h][x];
                }
                out[k][h] = sum;
            }
        }
        out
    }

    /// One 8-lane accumulator per (x, y) pair, side by side, over the chunks of 8 at start, start + step, … below
    /// `end`: K + Q loads for K·Q fused multiply-adds in K·Q independent chains.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma_chunks<const K: usize, const Q: usize>(
        xs: &[&[f32]; K],
        ys: &[&[f32]; Q],
        start: usize,
        step: usize,
        end: usize,
    ) -> [[__m256; Q]; K] {
        let mut acc = [[_mm256_setzero_ps(); Q]; K];
        let mut i = start;
        while i + 8 <= end {
            let mut xv = [_mm256_setzero_ps(); K];
            for k in 0..K {
                xv[k] = _mm256_loadu_ps(xs[k].as_ptr().add(i));
            }
            for h in 0..Q {
                let yv = _mm256_loadu_ps(ys[h].as_ptr().add(i));
                for k in 0..K {
                    acc[k][h] = _mm256_fmadd_ps(xv[k], yv, acc[k][h]);
                }
            }
            i += step;
        }
        acc
    }

    /// tinyBLAS's dot product (element i into lane i % 8, fused, then `hsum8`) for every (x, y) pair, K·Q
    /// accumulators side by side: K + Q loads for K·Q fused multiply-adds. The lengths are multiples of 8.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot8_tile<const K: usize, const Q: usize>(
        xs: [&[f32]; K],
        ys: [&[f32]; Q],
    ) -> [[f32; Q]; K] {
        let n = xs
            .iter()
            .map(|x| x.len())
            .chain(ys.iter().map(|y| y.len()))
            .min()
            .unwrap_or(0);
        let acc = fma_chunks(&xs, &ys, 0, 8, n);
        let mut out = [[0f32; Q]; K];
        for k in 0..K {
            for h in 0..Q {
                let mut l = [0f32; 8];
                _mm256_storeu_ps(l.as_mut_ptr(), acc[k][h]);
                out[k][h] = super::hsum8(&l);
            }
        }
        out
    }

    /// ggml_v_expf (the AVX2 + FMA variant) on 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp8(v: &mut [f32; 8]) {
        let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
        let x = _mm256_loadu_ps(v.as_ptr());
        let r = c(0x4b40_0000);
        let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), r);
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(n, c(0x35bf_be8e), _mm256_fnmadd_ps(n, c(0x3f31_7200), x));
        let e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
        let k = _mm256_castsi256_ps(_mm256_add_epi32(
            e,
            _mm256_castps_si256(_mm256_set1_ps(1.0)),
        ));
        let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let cmask = _mm256_cmp_ps(abs_n, _mm256_set1_ps(126.0), _CMP_GT_OQ);
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
                u,
                _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
            ),
            u,
            _mm256_mul_ps(c(0x3f7f_fff6), b),
        );
        let result = if _mm256_movemask_ps(cmask) == 0 {
            _mm256_fmadd_ps(j, k, k)
        } else {
            let g = _mm256_and_si256(
                _mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                _mm256_set1_epi32(0x8200_0000u32 as i32),
            );
            let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
            let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
            let dmask = _mm256_cmp_ps(abs_n, _mm256_set1_ps(192.0), _CMP_GT_OQ);
            _mm256_or_ps(
                _mm256_and_ps(dmask, _mm256_mul_ps(s1, s1)),
                _mm256_andnot_ps(
                    dmask,
                    _mm256_or_ps(
                        _mm256_and_ps(cmask, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                        _mm256_andnot_ps(cmask, _mm256_fmadd_ps(k, j, k)),
                    ),
                ),
            )
        };
        _mm256_storeu_ps(v.as_mut_ptr(), result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax attention in f64 straight from its definition, for one query position.
    fn reference(
        q: &[f32],
        keys: &[Vec<f32>],
        values: &[Vec<f32>],
        p: &AttentionParams,
        qpos: usize,
    ) -> Vec<f64> {
        let (hq, hkv, d) = (p.n_heads, p.n_kv_heads, p.head_dim);
        let lo = p.window.map_or(0, |w| (qpos + 1).saturating_sub(w));
        let mut out = vec![0f64; hq * d];
        for h in 0..hq {
            let g = h / (hq / hkv);
            let s: Vec<f64> = (lo..=qpos)
                .map(|t| {
                    let k = &keys[t][g * d..][..d];
                    (0..d)
                        .map(|i| q[h * d + i] as f64 * k[i] as f64)
                        .sum::<f64>()
                        * p.scale as f64
                })
                .collect();
            let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (t, e) in (lo..=qpos).zip(&e) {
                for i in 0..d {
                    out[h * d + i] += e / sum * values[t][g * d + i] as f64;
                }
            }
        }
        out
    }

    /// Batches and single tokens over a sliding window much shorter than the context: the transposed value rows
    /// grow several times and the dead prefix is dropped several times, and every answer still matches attention
    /// computed from scratch over the visible positions.
    #[test]
    fn a_growing_and_compacting_cache_attends_the_visible_positions() {
        let p = AttentionParams {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            scale: 0.25,
            softcap: None,
            window: Some(40),
        };
        let kv = p.n_kv_heads * p.head_dim;
        let spec = KvSpec {
            n_kv_heads: p.n_kv_heads,
            head_dim: p.head_dim,
            max_positions: 1024,
            window: p.window,
        };
        let mut cache = CpuKvCache::new(spec);
        let mut seed = 0;
        let mut random = |n: usize| {
            seed += 1;
            crate::backend::gpu::testing::values(n, seed)
        };
        let (mut keys, mut values, mut pos) = (Vec::new(), Vec::new(), 0);
        for rows in [50, 1, 1, 70, 1, 33, 1, 1, 100, 1, 1, 1, 9] {
            let (q, k, v) = (
                random(rows * p.n_heads * p.head_dim),
                random(rows * kv),
                random(rows * kv),
            );
            keys.extend(k.chunks_exact(kv).map(<[f32]>::to_vec));
            values.extend(v.chunks_exact(kv).map(<[f32]>::to_vec));
            for simd in [false, true] {
                let mut c = CpuKvCache {
                    k: cache.k.clone(),
                    vt: cache.vt.clone(),
                    ..cache
                };
                let y = attend(simd, &q, &k, &v, rows, &mut c, &p, pos).unwrap();
                for (t, y) in y.chunks_exact(p.n_heads * p.head_dim).enumerate() {
                    let want = reference(&q[t * y.len()..][..y.len()], &keys, &values, &p, pos + t);
                    for (i, (&got, &want)) in y.iter().zip(&want).enumerate() {
                        assert!(
                            (got as f64 - want).abs() < 1e-5,
                            "position {}, value {i}: {got} against {want}",
                            pos + t
                        );
                    }
                }
                if simd {
                    cache = c;
                }
            }
            pos += rows;
        }
        assert!(cache.first_pos > 0, "the window never dropped a position");
    }
}
