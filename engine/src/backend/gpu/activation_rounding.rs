//! Activations rounded as ggml's CPU quantises them before a quantised product (shaders/round_activations.wgsl).
//!
//! llama.cpp multiplies a Q4_1 weight by the activation row rounded to Q8_1 blocks, a K-quant by Q8_K blocks, an F16
//! weight by the row rounded to f16. Exact f32 products land ~0.3 logit from it on real models — enough to flip a
//! greedy token now and then — so GGUF models on the GPU round the same way, and agree with llama.cpp (and our CPU
//! backend) as closely as the CPU does.

use super::matmul::ProductStrategy;
use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor};
use crate::quant::GgmlType;
use crate::Result;
use std::cell::RefCell;

const SOURCE: &str = include_str!("../../../shaders/round_activations.wgsl");
const WORKGROUP: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

/// The MODE of the shader for a weight type, with the block size it rounds over; None when ggml keeps f32.
fn mode(dtype: GgmlType) -> Option<(u32, usize)> {
    match dtype {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
            Some((1, 32))
        }
        GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => Some((2, 256)),
        GgmlType::F16 => Some((3, 1)),
        GgmlType::BF16 => Some((4, 1)),
        GgmlType::F32 => None,
    }
}

/// `x` as ggml's CPU would see it multiplied by a weight of `dtype`; `x` itself when no rounding applies (or the
/// row is not whole blocks, which the matmul then reports).
pub(crate) fn round_for(b: &GpuBackend, x: &GpuTensor, dtype: GgmlType) -> Result<GpuTensor> {
    let Some((mode, block)) = mode(dtype) else {
        return Ok(x.clone());
    };
    if !x.cols.is_multiple_of(block) {
        return Ok(x.clone());
    }
    let out = b.tensor(x.rows, x.cols);
    let kernel = b.rec.kernel(
        "round_activations",
        SOURCE,
        &[("MODE", format!("{mode}u"))],
        &[Access::Read, Access::ReadWrite],
    );
    let invocations = x.len() / block;
    let params = Params {
        n: x.len() as u32,
        _pad: [0; 3],
    };
    b.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[x.buf(), out.buf()],
        grid(invocations.div_ceil(WORKGROUP) as u32),
    )?;
    Ok(out)
}

const CORRECTION: &str = include_str!("../../../shaders/q8_1_correction.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CorrectionParams {
    rows: u32,
    chunk_rows: u32,
    first_row: u32,
    out_stride: u32,
    row_bytes: u32,
    blocks: u32,
    block_bytes: u32,
    _pad: u32,
}

/// x · Wᵀ for Q4_1 / Q5_1 weights exactly as ggml forms it with Q8_1 activations: the rounded product, plus
/// m · (f16(d·Σq) - f16(d)·Σq) per block. None for other types (or rows that are not whole blocks).
pub(crate) fn q8_1_matmul(
    b: &GpuBackend,
    memo: &RefCell<Option<Rounded>>,
    x: &GpuTensor,
    w: &super::GpuWeight,
) -> Result<Option<GpuTensor>> {
    q8_1_matmul_with(b, memo, x, w, ProductStrategy::for_backend(b))
}

pub(crate) fn q8_1_matmul_with(
    b: &GpuBackend,
    memo: &RefCell<Option<Rounded>>,
    x: &GpuTensor,
    w: &super::GpuWeight,
    strategy: ProductStrategy,
) -> Result<Option<GpuTensor>> {
    if !matches!(w.dtype, GgmlType::Q4_1 | GgmlType::Q5_1) || !x.cols.is_multiple_of(32) {
        return Ok(None);
    }
    let (rounded, sums) = cached(memo, x, Q8_1_MODE, || {
        let blocks = x.cols / 32;
        let (rounded, sums) = (b.tensor(x.rows, x.cols), b.tensor(x.rows, blocks));
        let access = [Access::Read, Access::ReadWrite, Access::ReadWrite];
        let kernel = b.rec.kernel_entry(
            "round_activations",
            SOURCE,
            "q8_1",
            &[("MODE", "1u".to_string())],
            &access,
        );
        let params = Params {
            n: x.len() as u32,
            _pad: [0; 3],
        };
        let groups = grid((x.rows * blocks).div_ceil(WORKGROUP) as u32);
        b.rec.dispatch(
            &kernel,
            bytemuck::bytes_of(&params),
            &[x.buf(), rounded.buf(), sums.buf()],
            groups,
        )?;
        Ok((rounded, Some(sums)))
    })?;
    Ok(Some(super::matmul::matmul_with(
        b,
        &rounded,
        w,
        sums.as_ref(),
        strategy,
    )?))
}

/// out [rows, w.rows] += Σ_b m[o, b] · delta[r, b]: the Q8_1 sum term after a matmat.wgsl product (every other
/// product kernel adds it itself).
pub(crate) fn add_q8_1_sums(
    b: &GpuBackend,
    w: &super::GpuWeight,
    delta: &GpuTensor,
    out: &GpuTensor,
) -> Result<()> {
    let kernel = b.rec.kernel(
        "q8_1_correction",
        CORRECTION,
        &[],
        &[Access::Read, Access::Read, Access::ReadWrite],
    );
    let block_bytes = w.dtype.byte_len(32).unwrap_or(20) as u32;
    for chunk in &w.chunks {
        let params = CorrectionParams {
            rows: out.rows as u32,
            chunk_rows: chunk.rows as u32,
            first_row: chunk.first_row as u32,
            out_stride: w.rows as u32,
            row_bytes: w.row_bytes as u32,
            blocks: delta.cols as u32,
            block_bytes,
            _pad: 0,
        };
        let groups = grid((out.rows * chunk.rows).div_ceil(WORKGROUP) as u32);
        b.rec.dispatch(
            &kernel,
            bytemuck::bytes_of(&params),
            &[&chunk.buf, delta.buf(), out.buf()],
            groups,
        )?;
    }
    Ok(())
}

/// A rounding kept for reuse. Holding `source` keeps its buffer out of the pool, and tensors are never written
/// after the op that made them, so the same buffer means the same values.
pub(crate) struct Rounded {
    source: GpuTensor,
    mode: u32,
    result: GpuTensor,
    sums: Option<GpuTensor>,
}

/// The memo's key for Q8_1 rounding with its block sums (the shader's MODE 1 plus the sums).
const Q8_1_MODE: u32 = u32::MAX;

/// The rounding `mode` of `x` from the memo, or `round` run and remembered.
fn cached(
    memo: &RefCell<Option<Rounded>>,
    x: &GpuTensor,
    mode: u32,
    round: impl FnOnce() -> Result<(GpuTensor, Option<GpuTensor>)>,
) -> Result<(GpuTensor, Option<GpuTensor>)> {
    if let Some(r) = memo.borrow().as_ref() {
        if r.mode == mode && std::rc::Rc::ptr_eq(&r.source.slab, &x.slab) {
            return Ok((r.result.clone(), r.sums.clone()));
        }
    }
    let (result, sums) = round()?;
    *memo.borrow_mut() = Some(Rounded {
        source: x.clone(),
        mode,
        result: result.clone(),
        sums: sums.clone(),
    });
    Ok((result, sums))
}

/// `round_for`, reusing the previous result when the same tensor is rounded the same way again (q, k and v share
/// their input, as do gate and up).
pub(crate) fn round_cached(
    b: &GpuBackend,
    memo: &RefCell<Option<Rounded>>,
    x: &GpuTensor,
    dtype: GgmlType,
) -> Result<GpuTensor> {
    let Some((mode, _)) = mode(dtype) else {
        return Ok(x.clone());
    };
    Ok(cached(memo, x, mode, || Ok((round_for(b, x, dtype)?, None)))?.0)
}

#[cfg(test)]
mod tests {
    use super::round_for;
    use crate::backend::cpu::q8;
    use crate::backend::gpu::testing::{assert_close, backend, read, values};
    use crate::quant::GgmlType;

    #[test]
    fn rounding_matches_the_cpu_quantisers() {
        let Some(g) = backend() else { return };
        let (rows, cols) = (3, 512);
        let mut x: Vec<f32> = values(rows * cols, 11).iter().map(|v| v * 3.0).collect();
        x[40..72].iter_mut().for_each(|v| *v = 0.0); // an all-zero block
        let gx = g.tensor_from_host(&x, rows, cols).unwrap();

        let mut q8_0 = vec![q8::BlockQ8_0::default(); x.len() / 32];
        q8::quantize_q8_0(&x, &mut q8_0);
        let want: Vec<f32> = q8_0
            .iter()
            .flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d))
            .collect();
        assert_close(
            "Q8_0",
            &read(&g, &round_for(&g, &gx, GgmlType::Q4_0).unwrap()),
            &want,
            0.0,
        );

        let mut q8_k = vec![q8::BlockQ8K::default(); x.len() / 256];
        q8::quantize_q8_k(&x, &mut q8_k);
        let want: Vec<f32> = q8_k
            .iter()
            .flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d))
            .collect();
        assert_close(
            "Q8_K",
            &read(&g, &round_for(&g, &gx, GgmlType::Q6K).unwrap()),
            &want,
            0.0,
        );

        let want: Vec<f32> = x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        assert_close(
            "f16",
            &read(&g, &round_for(&g, &gx, GgmlType::F16).unwrap()),
            &want,
            0.0,
        );
        let want: Vec<f32> = x
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        assert_close(
            "bf16",
            &read(&g, &round_for(&g, &gx, GgmlType::BF16).unwrap()),
            &want,
            0.0,
        );
    }
}
