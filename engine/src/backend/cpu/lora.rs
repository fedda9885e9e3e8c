//! The LoRA term y + s · (x · Aᵀ) · Bᵀ on the CPU. Each row is computed alone, in a fixed order, so a row's bits do
//! not depend on how many rows run with it (a batched decode step gives each sequence what it would get alone).

use super::{with_f32_slice, CpuWeight};
use crate::{Error, Result};
use candle_core::Tensor;

/// Σ a[i]·b[i] in eight interleaved partial sums (vectorisable, and the same order on every target).
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

pub(super) fn add_low_rank(y: &Tensor, x: &Tensor, a: &CpuWeight, b: &CpuWeight, scale: f32) -> Result<Tensor> {
    let (a, rank, inputs) = dense(a)?;
    let (b, outputs, b_rank) = dense(b)?;
    let (rows, x_cols) = x.dims2()?;
    let y_dims = y.dims2()?;
    if x_cols != inputs || b_rank != rank || y_dims != (rows, outputs) || rank == 0 {
        return Err(Error::Backend(format!(
            "a LoRA term of A [{rank}, {inputs}] and B [{outputs}, {b_rank}] for x [{rows}, {x_cols}] and y {y_dims:?}"
        )));
    }
    let mut out = y.flatten_all()?.to_vec1::<f32>()?;
    with_f32_slice(a, |a| {
        with_f32_slice(b, |b| {
            with_f32_slice(x, |x| {
                let each_row = |(x_row, y_row): (&[f32], &mut [f32])| {
                    let t: Vec<f32> = a.chunks_exact(inputs).map(|a_row| dot(x_row, a_row)).collect();
                    for (y, b_row) in y_row.iter_mut().zip(b.chunks_exact(rank)) {
                        *y += scale * dot(&t, b_row);
                    }
                };
                // wasm has no thread pool; rows are independent, so either way gives the same bits.
                #[cfg(not(target_arch = "wasm32"))]
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
