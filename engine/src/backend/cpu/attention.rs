//! Causal (optionally sliding-window) attention over a KV cache, with the arithmetic of llama.cpp's CPU graph
//! without flash attention: kq = K·Q by `ggml_vec_dot_f32`, masked softmax by `ggml_compute_forward_soft_max_f32`,
//! then kqv = V·softmax by tinyBLAS for a batch of queries or `ggml_vec_dot_f32` for a single one.
//!
//! llama.cpp keeps the position-p key in KV cell p and runs every dot over all cells, masked ones contributing
//! exact zeros. Its SIMD sums assign cell p to lane p % 8 (and accumulator (p % 32) / 8), so the sums here walk
//! absolute positions with the same lanes and reduce them in the same order.

use super::ops::{expf_v, fma, fma_dispatch, hsum8, vec_dot_f32};
use crate::backend::{AttentionParams, KvSpec};
use crate::{Error, Result};

/// One layer's keys and values, `[position][kv head][head_dim]`, for positions first_pos..first_pos + len.
pub struct CpuKvCache {
    spec: KvSpec,
    k: Vec<f32>,
    v: Vec<f32>,
    first_pos: usize,
}

impl CpuKvCache {
    pub fn new(spec: KvSpec) -> Self {
        Self { spec, k: Vec::new(), v: Vec::new(), first_pos: 0 }
    }

    pub fn reset(&mut self) {
        self.k.clear();
        self.v.clear();
        self.first_pos = 0;
    }

    fn row(&self) -> usize {
        self.spec.n_kv_heads * self.spec.head_dim
    }

    fn len(&self) -> usize {
        self.k.len() / self.row().max(1)
    }
}

/// Appends `k`, `v` (`rows` positions from `start_pos`) to the cache, then attends `q` (`[rows, n_heads·head_dim]`)
/// over every visible cached position; returns `[rows, n_heads·head_dim]`.
pub fn attend(
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
        return Err(Error::Backend("attention inputs do not match their head counts".into()));
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
    cache.k.extend_from_slice(k);
    cache.v.extend_from_slice(v);

    let group = hq / hkv;
    // llama.cpp's kqv goes through tinyBLAS when there are several queries and the head size suits its 4-row tiles.
    let batch = rows > 1 && d % 4 == 0;
    let mut out = vec![0f32; rows * hq * d];
    let job = |t: usize, h: usize, o: &mut [f32]| {
        let qpos = start_pos + t;
        let lo = p.window.map_or(0, |w| (qpos + 1).saturating_sub(w)).max(cache.first_pos);
        head(&q[(t * hq + h) * d..][..d], cache, h / group, lo, qpos, p, batch, o);
    };
    for_each_head(&mut out, rows, hq, d, job);

    // Keep only what a later query can still see.
    if let Some(w) = cache.spec.window {
        let keep_from = (start_pos + rows + 1).saturating_sub(w).max(cache.first_pos);
        let drop = keep_from - cache.first_pos;
        // Compacting only once the dead prefix is as long as the window keeps appends amortised O(1).
        if drop >= w.max(64) {
            cache.k.drain(..drop * kv_row);
            cache.v.drain(..drop * kv_row);
            cache.first_pos = keep_from;
        }
    }
    Ok(out)
}

#[cfg(not(target_arch = "wasm32"))]
fn for_each_head(out: &mut [f32], rows: usize, hq: usize, d: usize, job: impl Fn(usize, usize, &mut [f32]) + Sync) {
    use rayon::prelude::*;
    // Small problems (decode of a short context) are not worth waking the pool for.
    if rows * hq < 4 {
        out.chunks_exact_mut(d).enumerate().for_each(|(i, o)| job(i / hq, i % hq, o));
    } else {
        out.par_chunks_exact_mut(d).enumerate().for_each(|(i, o)| job(i / hq, i % hq, o));
    }
}

#[cfg(target_arch = "wasm32")]
fn for_each_head(out: &mut [f32], _rows: usize, hq: usize, d: usize, job: impl Fn(usize, usize, &mut [f32]) + Sync) {
    out.chunks_exact_mut(d).enumerate().for_each(|(i, o)| job(i / hq, i % hq, o));
}

fma_dispatch! {
    /// One query head at position `qpos` over cached positions lo..=qpos of kv head `g`, into `out` (`head_dim`).
    #[allow(clippy::too_many_arguments)]
    fn head(q: &[f32], cache: &CpuKvCache, g: usize, lo: usize, qpos: usize, p: &AttentionParams, batch: bool, out: &mut [f32]) = head_impl;
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn head_impl(q: &[f32], cache: &CpuKvCache, g: usize, lo: usize, qpos: usize, p: &AttentionParams, batch: bool, out: &mut [f32]) {
    let d = p.head_dim;
    let kv_row = cache.row();
    let base = |pos: usize| (pos - cache.first_pos) * kv_row + g * d;

    // Scores of the visible positions, scaled (and soft-capped) as ggml does: kq · scale, then cap · tanh(kq / cap)
    // computed as a multiplication by 1 / cap. (Plain loops, not iterator closures: closures are not compiled with
    // the caller's AVX2 + FMA features.)
    let mut w = vec![0f32; qpos + 1 - lo];
    for (i, pos) in (lo..=qpos).enumerate() {
        let s = vec_dot_f32(&cache.k[base(pos)..][..d], q) * p.scale;
        w[i] = match p.softcap {
            Some(cap) => (s * (1.0 / cap)).tanh() * cap,
            None => s,
        };
    }
    let max = w.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));

    // exp in lanes of 8 cells, each chunk's lanes reduced and added to an f64 sum (ggml_vec_soft_max_f32).
    let mut sum = 0f64;
    let mut chunk_start = lo - lo % 8;
    while chunk_start <= qpos {
        let mut lanes = [0f32; 8];
        for (lane, pos) in (chunk_start..chunk_start + 8).enumerate() {
            if pos >= lo && pos <= qpos {
                let e = expf_v(w[pos - lo] - max);
                w[pos - lo] = e;
                lanes[lane] = e;
            }
        }
        sum += hsum8(&lanes) as f64;
        chunk_start += 8;
    }
    let inv = (1.0 / sum) as f32;
    w.iter_mut().for_each(|x| *x *= inv);

    out.fill(0.0);
    if batch {
        // tinyBLAS: per output value, 8 lane accumulators over the cells, fused multiply-adds, then hsum.
        let mut acc = vec![0f32; 8 * d];
        for (i, &pw) in w.iter().enumerate() {
            let pos = lo + i;
            let a = &mut acc[(pos % 8) * d..][..d];
            let v = &cache.v[base(pos)..][..d];
            for j in 0..d {
                a[j] = fma(pw, v[j], a[j]);
            }
        }
        for (dd, o) in out.iter_mut().enumerate() {
            let lanes: [f32; 8] = std::array::from_fn(|l| acc[l * d + dd]);
            *o = hsum8(&lanes);
        }
    } else {
        // ggml_vec_dot_f32: 4 accumulators of 8 lanes over chunks of 32 cells.
        let mut acc = vec![0f32; 32 * d];
        for (i, &pw) in w.iter().enumerate() {
            let pos = lo + i;
            let a = &mut acc[(pos % 32) * d..][..d];
            let v = &cache.v[base(pos)..][..d];
            for j in 0..d {
                a[j] = fma(pw, v[j], a[j]);
            }
        }
        for (dd, o) in out.iter_mut().enumerate() {
            let lanes: [f32; 32] = std::array::from_fn(|l| acc[l * d + dd]);
            *o = super::ops::reduce_f32x32(&lanes);
        }
    }
}
