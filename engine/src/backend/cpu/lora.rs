//! The LoRA term y + s · (x · Aᵀ) · B on the CPU (B given transposed, `[r, out]`). Each row is computed alone, in a fixed order, so a row's bits do
//! not depend on how many rows run with it (a batched decode step gives each sequence what it would get alone).

use super::{with_f32_slice, CpuWeight};
use crate::{Error, Result};
use candle_core::Tensor;

/// Σ a[i]·b[i] in eight interleaved partial sums (vectorisable, and the same order on every target).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

fn dense(w: &CpuWeight) -> Result<(&Tensor, usize, usize)> {
    match w {
        CpuWeight::Dense { weight, .. } => {
            let (rows, cols) = weight.dims2()?;
            Ok((weight, rows, cols))
        }
        CpuWeight::Quantized(_) => Err(Error::Backend("a LoRA matrix must be f32".into())),
    }
}

pub(super) fn add_low_rank(y: &Tensor, x: &Tensor, a: &CpuWeight, b_t: &CpuWeight, scale: f32) -> Result<Tensor> {
    let (a, rank, inputs) = dense(a)?;
    let (b_t, b_rank, outputs) = dense(b_t)?;
    let (rows, x_cols) = x.dims2()?;
    let y_dims = y.dims2()?;
    if x_cols != inputs || b_rank != rank || y_dims != (rows, outputs) || rank == 0 {
        return Err(Error::Backend(format!(
            "a LoRA term of A [{rank}, {inputs}] and Bᵀ [{b_rank}, {outputs}] for x [{rows}, {x_cols}] and y {y_dims:?}"
        )));
    }
    let mut out = y.flatten_all()?.to_vec1::<f32>()?;
    with_f32_slice(a, |a| {
        with_f32_slice(b_t, |b_t| {
            with_f32_slice(x, |x| {
                let each_row = |(x_row, y_row): (&[f32], &mut [f32])| row_term(x_row, a, b_t, scale, y_row);
                // A wasm build without threads has no pool; rows are independent, so either way gives the same bits.
                #[cfg(threaded)]
                if rows > 1 {
                    use rayon::prelude::*;
                    x.par_chunks(inputs).zip(out.par_chunks_mut(outputs)).for_each(each_row);
                    return Ok(());
                }
                x.chunks(inputs).zip(out.chunks_mut(outputs)).for_each(each_row);
                Ok(())
            })
        })
    })?;
    Ok(Tensor::from_vec(out, (rows, outputs), y.device())?)
}

/// One row: t = A·x, then y += scale · Σ_j t[j] · Bᵀ[j] (summed over j in order). The AVX2 build of the same code
/// does the same operations in the same order on wider registers (no fused multiply-adds), so the bits equal the
/// portable build's and the wasm one's.
fn row_term(x: &[f32], a: &[f32], b_t: &[f32], scale: f32, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // Safety: the CPU has AVX2, checked just above.
        return unsafe { row_term_avx2(x, a, b_t, scale, y) };
    }
    row_term_portable(x, a, b_t, scale, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_term_avx2(x: &[f32], a: &[f32], b_t: &[f32], scale: f32, y: &mut [f32]) {
    row_term_portable(x, a, b_t, scale, y)
}

#[inline(always)]
fn row_term_portable(x: &[f32], a: &[f32], b_t: &[f32], scale: f32, y: &mut [f32]) {
    let outputs = y.len();
    let mut d = vec![0f32; outputs];
    for (a_row, b_row) in a.chunks_exact(x.len()).zip(b_t.chunks_exact(outputs)) {
        let t = dot(x, a_row);
        for (d, b) in d.iter_mut().zip(b_row) {
            *d += t * b;
        }
    }
    for (y, d) in y.iter_mut().zip(&d) {
        *y += scale * d;
    }
}
