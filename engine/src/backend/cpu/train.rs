//! Training's ops on the CPU (see [`crate::train::TrainBackend`]): f32 throughout, in a fixed order — the reference
//! the GPU's training kernels are tested against. Products run on candle's matrix multiply; through a quantized
//! weight they dequantise a block of its rows at a time (8 MB), so no dequantised copy of a whole weight exists.

use super::{with_f32_slice, CpuBackend, CpuRope, CpuWeight};
use crate::backend::{AttentionParams, Backend};
use crate::config::{Activation, RopeLayout};
use crate::train::TrainBackend;
use crate::{Error, Result};
use candle_core::{DType, Tensor};

fn values(x: &Tensor) -> Result<Vec<f32>> {
    with_f32_slice(x, |v| Ok(v.to_vec()))
}

fn dims(x: &Tensor) -> Result<(usize, usize)> {
    Ok(x.dims2()?)
}

/// A weight's `[out, in]`.
fn weight_dims(w: &CpuWeight) -> Result<(usize, usize)> {
    match w {
        CpuWeight::Dense { weight, .. } => Ok(weight.dims2()?),
        CpuWeight::Quantized(q) => Ok((q.rows(), q.cols())),
    }
}

/// Rows of a quantized weight dequantised per block: enough for the products to run at matrix speed, while no
/// dequantised copy of the whole weight exists at any time.
const BLOCK_BYTES: usize = 8 << 20;

/// A quantized `w` (`[out, in]`) as f32 blocks of rows `[n, in]`, each with its first row's index.
fn for_each_weight_block(
    w: &CpuWeight,
    device: &candle_core::Device,
    mut f: impl FnMut(usize, &Tensor) -> Result<()>,
) -> Result<()> {
    let CpuWeight::Quantized(q) = w else {
        return Err(Error::Backend("only a quantized weight is read in blocks".into()));
    };
    let (out, inp) = (q.rows(), q.cols());
    let per_block = (BLOCK_BYTES / (4 * inp.max(1))).clamp(1, out.max(1));
    let mut start = 0;
    while start < out {
        let n = per_block.min(out - start);
        let mut block = vec![0f32; n * inp];
        for (r, row) in block.chunks_exact_mut(inp.max(1)).enumerate() {
            q.dequantize_row(start + r, row)?;
        }
        f(start, &Tensor::from_vec(block, (n, inp), device)?)?;
        start += n;
    }
    Ok(())
}

/// GELU with the tanh approximation, as PyTorch's `gelu(approximate="tanh")`, and its derivative.
fn gelu_tanh(x: f32) -> (f32, f32) {
    const C: f32 = 0.797_884_6; // √(2/π)
    const A: f32 = 0.044_715;
    let inner = C * (x + A * x * x * x);
    let t = inner.tanh();
    let value = 0.5 * x * (1.0 + t);
    let grad = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3.0 * A * x * x);
    (value, grad)
}

fn activation(act: Activation, g: f32) -> (f32, f32) {
    match act {
        Activation::Silu => {
            let s = 1.0 / (1.0 + (-g).exp());
            (g * s, s * (1.0 + g * (1.0 - s)))
        }
        Activation::GeluTanh | Activation::GeluTanhF16Table => gelu_tanh(g),
    }
}

impl CpuBackend {
    fn from_values(&self, v: Vec<f32>, rows: usize, cols: usize) -> Result<Tensor> {
        Ok(Tensor::from_vec(v, (rows, cols), &self.device)?)
    }
}

/// The pair partner of index `i` of a head and whether `i` is the pair's second element, in a RoPE layout.
fn second_of_pair(i: usize, head_dim: usize, layout: RopeLayout) -> bool {
    match layout {
        RopeLayout::Adjacent => i % 2 == 1,
        RopeLayout::SplitHalves => i >= head_dim / 2,
    }
}

impl TrainBackend for CpuBackend {
    fn tensor(&self, rows: usize, cols: usize, v: &[f32]) -> Result<Tensor> {
        if v.len() != rows * cols {
            return Err(Error::Backend(format!("{} values for a [{rows}, {cols}] tensor", v.len())));
        }
        self.from_values(v.to_vec(), rows, cols)
    }

    async fn read(&self, x: &Tensor) -> Result<Vec<f32>> {
        values(&x.to_dtype(DType::F32)?)
    }

    fn matmul_f32(&self, x: &Tensor, w: &CpuWeight) -> Result<Tensor> {
        let (rows, inp) = dims(x)?;
        let (_, w_in) = weight_dims(w)?;
        if w_in != inp {
            return Err(Error::Backend(format!("[{rows}, {inp}] times a weight of {w_in} columns")));
        }
        let x = x.contiguous()?;
        match w {
            CpuWeight::Dense { weight, .. } => Ok(x.matmul(&weight.t()?)?),
            CpuWeight::Quantized(_) => {
                let mut parts = Vec::new();
                for_each_weight_block(w, &self.device, |_, block| {
                    parts.push(x.matmul(&block.t()?)?);
                    Ok(())
                })?;
                Ok(Tensor::cat(&parts, 1)?.contiguous()?)
            }
        }
    }

    fn matmul_grad_x(&self, dy: &Tensor, w: &CpuWeight) -> Result<Tensor> {
        let (rows, out) = dims(dy)?;
        let (w_out, inp) = weight_dims(w)?;
        if w_out != out {
            return Err(Error::Backend(format!("a gradient of {out} columns through a weight of {w_out} rows")));
        }
        let dy = dy.contiguous()?;
        match w {
            CpuWeight::Dense { weight, .. } => Ok(dy.matmul(weight)?),
            CpuWeight::Quantized(_) => {
                let mut dx = Tensor::zeros((rows, inp), DType::F32, &self.device)?;
                for_each_weight_block(w, &self.device, |start, block| {
                    let part = dy.narrow(1, start, block.dim(0)?)?.contiguous()?;
                    dx = (&dx + part.matmul(block)?)?;
                    Ok(())
                })?;
                Ok(dx)
            }
        }
    }

    fn mm(&self, a: &Tensor, b: &Tensor, a_t: bool, b_t: bool) -> Result<Tensor> {
        let a = if a_t { a.t()? } else { a.clone() };
        let b = if b_t { b.t()? } else { b.clone() };
        Ok(a.contiguous()?.matmul(&b.contiguous()?)?)
    }

    fn add_scaled(&self, a: &Tensor, b: &Tensor, s: f32) -> Result<Tensor> {
        Ok((a + (b * s as f64)?)?)
    }

    fn rows(&self, x: &Tensor, start: usize, n: usize) -> Result<Tensor> {
        Ok(x.narrow(0, start, n)?.contiguous()?)
    }

    fn concat_cols(&self, parts: &[Tensor]) -> Result<Tensor> {
        if parts.is_empty() {
            return Err(Error::Backend("no columns to join".into()));
        }
        Ok(Tensor::cat(parts, 1)?.contiguous()?)
    }

    fn gated_f32(&self, gate: &Tensor, up: &Tensor, act: Activation) -> Result<Tensor> {
        let (rows, cols) = dims(gate)?;
        if dims(up)? != (rows, cols) {
            return Err(Error::Backend("gate and up differ in shape".into()));
        }
        let (g, u) = (values(gate)?, values(up)?);
        let out = g.iter().zip(&u).map(|(&g, &u)| activation(act, g).0 * u).collect();
        self.from_values(out, rows, cols)
    }

    fn gated_backward(&self, gate: &Tensor, up: &Tensor, dy: &Tensor, act: Activation) -> Result<(Tensor, Tensor)> {
        let (rows, cols) = dims(gate)?;
        let (g, u, d) = (values(gate)?, values(up)?, values(dy)?);
        let mut dg = vec![0f32; g.len()];
        let mut du = vec![0f32; g.len()];
        for i in 0..g.len() {
            let (a, da) = activation(act, g[i]);
            dg[i] = d[i] * u[i] * da;
            du[i] = d[i] * a;
        }
        Ok((self.from_values(dg, rows, cols)?, self.from_values(du, rows, cols)?))
    }

    fn rms_norm_backward(&self, x: &Tensor, weight: &Tensor, dy: &Tensor, eps: f32) -> Result<Tensor> {
        let (rows, cols) = dims(x)?;
        let (xs, w, d) = (values(x)?, with_f32_slice(weight, |w| Ok(w.to_vec()))?, values(dy)?);
        let n = w.len();
        if n == 0 || cols % n != 0 {
            return Err(Error::Backend(format!("RMSNorm's backward over groups of {n} of {cols} columns")));
        }
        let mut dx = vec![0f32; xs.len()];
        for ((xr, dr), out) in xs.chunks_exact(n).zip(d.chunks_exact(n)).zip(dx.chunks_exact_mut(n)) {
            // y = x·r·w with r = (mean(x²) + eps)^(-1/2): dx = r·(w·dy) − x·r³·mean(x·w·dy).
            let mean_sq = xr.iter().map(|v| v * v).sum::<f32>() / n as f32;
            let r = 1.0 / (mean_sq + eps).sqrt();
            let wd: Vec<f32> = dr.iter().zip(&w).map(|(d, w)| d * w).collect();
            let proj = xr.iter().zip(&wd).map(|(x, g)| x * g).sum::<f32>() / n as f32;
            for ((o, &xv), &g) in out.iter_mut().zip(xr).zip(&wd) {
                *o = r * g - xv * r * r * r * proj;
            }
        }
        self.from_values(dx, rows, cols)
    }

    fn rope_backward(&self, dy: &Tensor, rope: &CpuRope, heads: usize) -> Result<Tensor> {
        // A rotation's transpose is the rotation by −θ: D·R(θ)·D with D negating each pair's second element, so
        // the forward's own angles serve.
        let (rows, cols) = dims(dy)?;
        let head_dim = cols.checked_div(heads).unwrap_or(0);
        let flip = |v: &mut [f32]| {
            for row in v.chunks_exact_mut(head_dim.max(1)) {
                for (i, x) in row.iter_mut().enumerate() {
                    if second_of_pair(i, head_dim, rope.layout) {
                        *x = -*x;
                    }
                }
            }
        };
        let mut d = values(dy)?;
        flip(&mut d);
        let rotated = self.rope(&self.from_values(d, rows, cols)?, rope, heads, 0)?;
        let mut out = values(&rotated)?;
        flip(&mut out);
        self.from_values(out, rows, cols)
    }

    fn attention_f32(&self, q: &Tensor, k: &Tensor, v: &Tensor, p: &AttentionParams) -> Result<(Tensor, Tensor)> {
        let rows = q.dim(0)?;
        let (out, lse) = super::train_attention::forward(&values(q)?, &values(k)?, &values(v)?, rows, p)?;
        Ok((self.from_values(out, rows, p.n_heads * p.head_dim)?, self.from_values(lse, rows, p.n_heads)?))
    }

    fn attention_backward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
        p: &AttentionParams,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let rows = q.dim(0)?;
        let (dq, dk, dv) = super::train_attention::backward(
            super::train_attention::Saved { q: &values(q)?, k: &values(k)?, v: &values(v)?, out: &values(out)?, lse: &values(lse)? },
            &values(dout)?,
            rows,
            p,
        )?;
        let (qw, kw) = (p.n_heads * p.head_dim, p.n_kv_heads * p.head_dim);
        Ok((self.from_values(dq, rows, qw)?, self.from_values(dk, rows, kw)?, self.from_values(dv, rows, kw)?))
    }

    fn softcap_backward(&self, y: &Tensor, dy: &Tensor, cap: f32) -> Result<Tensor> {
        let (rows, cols) = dims(y)?;
        let (ys, d) = (values(y)?, values(dy)?);
        let out = ys.iter().zip(&d).map(|(&y, &d)| d * (1.0 - (y / cap) * (y / cap))).collect();
        self.from_values(out, rows, cols)
    }

    fn cross_entropy(&self, logits: &Tensor, targets: &[Option<u32>], weight: f32) -> Result<(Tensor, Tensor)> {
        let (rows, vocab) = dims(logits)?;
        if targets.len() != rows {
            return Err(Error::Backend(format!("{} targets for {rows} rows of logits", targets.len())));
        }
        let l = values(logits)?;
        let mut grad = vec![0f32; l.len()];
        let mut total = 0f64;
        for ((row, g), target) in l.chunks_exact(vocab).zip(grad.chunks_exact_mut(vocab)).zip(targets) {
            let Some(t) = *target else { continue };
            let t = t as usize;
            if t >= vocab {
                return Err(Error::InvalidArgument(format!("target token {t} is outside the vocabulary ({vocab})")));
            }
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|&z| ((z - max) as f64).exp()).sum();
            let lse = max as f64 + sum.ln();
            total += weight as f64 * (lse - row[t] as f64);
            for (gi, &z) in g.iter_mut().zip(row) {
                *gi = weight * ((z as f64 - lse).exp() as f32);
            }
            g[t] -= weight;
        }
        Ok((self.from_values(vec![total as f32], 1, 1)?, self.from_values(grad, rows, vocab)?))
    }
}

#[cfg(test)]
mod tests {
    //! Each backward against central differences of its forward: L = Σ dy · f(x), dL/dx_i ≈ (L(x + h e_i) −
    //! L(x − h e_i)) / 2h, computed in f64 from the f32 forward (h large enough that f32 rounding stays small).
    use super::*;
    use crate::backend::Backend;

    use crate::backend::gpu::testing::values as rand;

    fn t(b: &CpuBackend, rows: usize, cols: usize, v: &[f32]) -> Tensor {
        b.tensor(rows, cols, v).unwrap()
    }

    fn v(x: &Tensor) -> Vec<f32> {
        values(x).unwrap()
    }

    /// Checks `analytic` against central differences of `loss` at `x`; returns the worst relative error.
    fn check(what: &str, x: &[f32], analytic: &[f32], loss: impl Fn(&[f32]) -> f64) {
        let h = 1e-2f32;
        let scale = analytic.iter().fold(1e-3f32, |m, g| m.max(g.abs()));
        for i in 0..x.len() {
            let (mut up, mut down) = (x.to_vec(), x.to_vec());
            up[i] += h;
            down[i] -= h;
            let numeric = ((loss(&up) - loss(&down)) / (2.0 * h as f64)) as f32;
            let err = (numeric - analytic[i]).abs() / scale;
            assert!(err < 2e-2, "{what}: d/dx[{i}] analytic {} numeric {numeric} (err {err:.2e} of max |grad| {scale})", analytic[i]);
        }
    }

    fn weighted(out: &[f32], dy: &[f32]) -> f64 {
        out.iter().zip(dy).map(|(a, b)| *a as f64 * *b as f64).sum()
    }

    #[test]
    fn rms_norm_backward_matches_differences() {
        let b = CpuBackend::new();
        // Rows of 8, and QK-norm's groups of 4 inside a row of 8.
        for group in [8, 4] {
            let (x, w, dy) = (rand(24, 1), rand(group, 2), rand(24, 3));
            let wt = b.upload_vector(&w).unwrap();
            let dx = v(&b.rms_norm_backward(&t(&b, 3, 8, &x), &wt, &t(&b, 3, 8, &dy), 1e-6).unwrap());
            check("rms_norm", &x, &dx, |x| weighted(&v(&b.rms_norm(&t(&b, 3, 8, x), &wt, 1e-6).unwrap()), &dy));
        }
    }

    #[test]
    fn gated_backward_matches_differences() {
        let b = CpuBackend::new();
        for act in [Activation::Silu, Activation::GeluTanh] {
            let (g, u, dy) = (rand(12, 4), rand(12, 5), rand(12, 6));
            let (dg, du) = b.gated_backward(&t(&b, 3, 4, &g), &t(&b, 3, 4, &u), &t(&b, 3, 4, &dy), act).unwrap();
            let f = |g: &[f32], u: &[f32]| weighted(&v(&b.gated_f32(&t(&b, 3, 4, g), &t(&b, 3, 4, u), act).unwrap()), &dy);
            check(&format!("{act:?} gate"), &g, &v(&dg), |g| f(g, &u));
            check(&format!("{act:?} up"), &u, &v(&du), |u| f(&g, u));
        }
    }

    #[test]
    fn softcap_and_cross_entropy_backward_match_differences() {
        let b = CpuBackend::new();
        let (x, dy) = (rand(12, 7).iter().map(|x| x * 4.0).collect::<Vec<_>>(), rand(12, 8));
        let y = b.softcap(&t(&b, 3, 4, &x), 2.0).unwrap();
        let dx = v(&b.softcap_backward(&y, &t(&b, 3, 4, &dy), 2.0).unwrap());
        check("softcap", &x, &dx, |x| weighted(&v(&b.softcap(&t(&b, 3, 4, x), 2.0).unwrap()), &dy));

        let targets = [Some(1), None, Some(3)];
        let (_, g) = b.cross_entropy(&t(&b, 3, 4, &x), &targets, 0.5).unwrap();
        let loss = |x: &[f32]| {
            let (l, _) = b.cross_entropy(&t(&b, 3, 4, x), &targets, 0.5).unwrap();
            v(&l)[0] as f64
        };
        check("cross_entropy", &x, &v(&g), loss);
        assert!(v(&g)[4..8].iter().all(|&g| g == 0.0), "an unscored row gets no gradient");
    }

    #[test]
    fn rope_backward_is_the_transpose_in_both_layouts() {
        let b = CpuBackend::new();
        let inv_freq = [1.0f32, 0.1];
        for layout in [RopeLayout::SplitHalves, RopeLayout::Adjacent] {
            let rope = b.rope_table(&inv_freq, layout).unwrap();
            let (x, dy) = (rand(3 * 8, 9), rand(3 * 8, 10));
            let dx = v(&b.rope_backward(&t(&b, 3, 8, &dy), &rope, 2).unwrap());
            check(&format!("rope {layout:?}"), &x, &dx, |x| weighted(&v(&b.rope(&t(&b, 3, 8, x), &rope, 2, 0).unwrap()), &dy));
        }
    }

    #[test]
    fn attention_backward_matches_differences() {
        let b = CpuBackend::new();
        // GQA (4 heads over 2), a window shorter than the sequence, a softcap that bites, and neither.
        let rows = 5;
        let cases = [
            AttentionParams { n_heads: 4, n_kv_heads: 2, head_dim: 3, scale: 0.7, softcap: Some(1.5), window: Some(3) },
            AttentionParams { n_heads: 2, n_kv_heads: 1, head_dim: 4, scale: 0.5, softcap: None, window: None },
        ];
        for p in cases {
            let (qw, kw) = (p.n_heads * p.head_dim, p.n_kv_heads * p.head_dim);
            let (q, k, vv) = (rand(rows * qw, 11), rand(rows * kw, 12), rand(rows * kw, 13));
            let q: Vec<f32> = q.iter().map(|x| x * 2.0).collect();
            let dy = rand(rows * qw, 14);
            let (qt, kt, vt) = (t(&b, rows, qw, &q), t(&b, rows, kw, &k), t(&b, rows, kw, &vv));
            let (out, lse) = b.attention_f32(&qt, &kt, &vt, &p).unwrap();
            let (dq, dk, dv) = b.attention_backward(&qt, &kt, &vt, &out, &lse, &t(&b, rows, qw, &dy), &p).unwrap();
            let f = |q: &[f32], k: &[f32], vv: &[f32]| {
                let (o, _) = b.attention_f32(&t(&b, rows, qw, q), &t(&b, rows, kw, k), &t(&b, rows, kw, vv), &p).unwrap();
                weighted(&v(&o), &dy)
            };
            check("attention dq", &q, &v(&dq), |q| f(q, &k, &vv));
            check("attention dk", &k, &v(&dk), |k| f(&q, k, &vv));
            check("attention dv", &vv, &v(&dv), |vv| f(&q, &k, vv));
        }
    }

    #[test]
    fn products_through_a_quantized_weight_dequantise_inside() {
        let b = CpuBackend::new();
        let (out, inp, rows) = (3, 64, 2);
        let w = rand(out * inp, 15);
        let q8 = crate::quant::quantize_q8_0(&w).unwrap();
        let weight = b.upload_weight("w", crate::quant::GgmlType::Q8_0, [out, inp], &q8).unwrap();
        let deq = crate::quant::dequantize_to_vec(crate::quant::GgmlType::Q8_0, &q8, out * inp).unwrap();
        let (x, dy) = (rand(rows * inp, 16), rand(rows * out, 17));
        let y = v(&b.matmul_f32(&t(&b, rows, inp, &x), &weight).unwrap());
        for r in 0..rows {
            for o in 0..out {
                let want: f32 = (0..inp).map(|c| x[r * inp + c] * deq[o * inp + c]).sum();
                assert!((y[r * out + o] - want).abs() < 1e-4, "y[{r},{o}] {} vs {want}", y[r * out + o]);
            }
        }
        let dx = v(&b.matmul_grad_x(&t(&b, rows, out, &dy), &weight).unwrap());
        for r in 0..rows {
            for c in 0..inp {
                let want: f32 = (0..out).map(|o| dy[r * out + o] * deq[o * inp + c]).sum();
                assert!((dx[r * inp + c] - want).abs() < 1e-4, "dx[{r},{c}] {} vs {want}", dx[r * inp + c]);
            }
        }
    }
}
