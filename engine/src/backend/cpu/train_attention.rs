//! Causal self-attention of one sequence for training, and its backward pass. The forward keeps only each row's
//! log-sum-exp; the backward rebuilds the probabilities from q, k and it (as FlashAttention does), so memory grows
//! with the sequence, not with its square.
//!
//! Per head h (kv head h / (n_heads / n_kv_heads)), row i, visible key j (i − W < j ≤ i with a window W):
//!   z = scale · q_i·k_j, s = cap · tanh(z / cap) (or z), p = softmax_j(s), out_i = Σ_j p_j v_j.
//! Backward, with D_i = dout_i·out_i: dp_j = dout_i·v_j, ds_j = p_j (dp_j − D_i), dz = ds (1 − (s / cap)²),
//!   dq_i += scale · dz k_j, dk_j += scale · dz q_i, dv_j += p_j dout_i.

use crate::backend::AttentionParams;
use crate::{Error, Result};

/// What the forward kept.
pub struct Saved<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub out: &'a [f32],
    pub lse: &'a [f32],
}

struct Shape {
    rows: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    group: usize,
}

impl Shape {
    fn new(rows: usize, p: &AttentionParams, q: usize, k: usize, v: usize) -> Result<Self> {
        let (heads, kv_heads, d) = (p.n_heads, p.n_kv_heads, p.head_dim);
        if kv_heads == 0 || heads % kv_heads != 0 || q != rows * heads * d || k != rows * kv_heads * d || v != k {
            return Err(Error::Backend(format!(
                "attention of {rows} rows with {heads} heads over {kv_heads} kv heads of {d}: q {q}, k {k}, v {v} values"
            )));
        }
        Ok(Shape { rows, heads, kv_heads, d, group: heads / kv_heads })
    }

    fn q_at(&self, i: usize, h: usize) -> std::ops::Range<usize> {
        let start = (i * self.heads + h) * self.d;
        start..start + self.d
    }

    fn kv_at(&self, j: usize, h: usize) -> std::ops::Range<usize> {
        let start = (j * self.kv_heads + h / self.group) * self.d;
        start..start + self.d
    }
}

/// The keys row i sees.
fn visible(i: usize, window: Option<usize>) -> std::ops::RangeInclusive<usize> {
    let first = match window {
        Some(w) => (i + 1).saturating_sub(w),
        None => 0,
    };
    first..=i
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The capped score of q·k.
fn score(q: &[f32], k: &[f32], p: &AttentionParams) -> f32 {
    let z = p.scale * dot(q, k);
    match p.softcap {
        Some(cap) => cap * (z / cap).tanh(),
        None => z,
    }
}

/// (out `[rows, heads × d]`, lse `[rows, heads]`).
pub fn forward(q: &[f32], k: &[f32], v: &[f32], rows: usize, p: &AttentionParams) -> Result<(Vec<f32>, Vec<f32>)> {
    let s = Shape::new(rows, p, q.len(), k.len(), v.len())?;
    let mut out = vec![0f32; q.len()];
    let mut lse = vec![0f32; rows * s.heads];
    let mut scores = Vec::with_capacity(rows);
    for i in 0..s.rows {
        for h in 0..s.heads {
            let qi = &q[s.q_at(i, h)];
            scores.clear();
            scores.extend(visible(i, p.window).map(|j| score(qi, &k[s.kv_at(j, h)], p)));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for x in scores.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            let o = &mut out[s.q_at(i, h)];
            for (j, &w) in visible(i, p.window).zip(&scores) {
                for (oc, &vc) in o.iter_mut().zip(&v[s.kv_at(j, h)]) {
                    *oc += w / sum * vc;
                }
            }
            lse[i * s.heads + h] = max + sum.ln();
        }
    }
    Ok((out, lse))
}

/// (dq, dk, dv), shaped as q, k and v.
pub fn backward(saved: Saved, dout: &[f32], rows: usize, p: &AttentionParams) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let Saved { q, k, v, out, lse } = saved;
    let s = Shape::new(rows, p, q.len(), k.len(), v.len())?;
    if out.len() != q.len() || dout.len() != q.len() || lse.len() != rows * s.heads {
        return Err(Error::Backend("attention backward: saved tensors do not match q".into()));
    }
    let (mut dq, mut dk, mut dv) = (vec![0f32; q.len()], vec![0f32; k.len()], vec![0f32; v.len()]);
    for i in 0..s.rows {
        for h in 0..s.heads {
            let qr = s.q_at(i, h);
            let (qi, doi) = (&q[qr.clone()], &dout[qr.clone()]);
            let d_i = dot(doi, &out[qr.clone()]);
            let l = lse[i * s.heads + h];
            for j in visible(i, p.window) {
                let kr = s.kv_at(j, h);
                let (kj, vj) = (&k[kr.clone()], &v[kr.clone()]);
                let sc = score(qi, kj, p);
                let pj = (sc - l).exp();
                let ds = pj * (dot(doi, vj) - d_i);
                let dz = match p.softcap {
                    Some(cap) => ds * (1.0 - (sc / cap) * (sc / cap)),
                    None => ds,
                } * p.scale;
                for c in 0..s.d {
                    dq[qr.start + c] += dz * kj[c];
                    dk[kr.start + c] += dz * qi[c];
                    dv[kr.start + c] += pj * doi[c];
                }
            }
        }
    }
    Ok((dq, dk, dv))
}
