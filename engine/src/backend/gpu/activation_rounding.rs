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

const SOURCE: &str = concat!(
    include_str!("../../../../shaders/round_block.wgsl"),
    include_str!("../../../../shaders/round_activations.wgsl")
);
const WORKGROUP: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

/// How ggml's CPU rounds activations multiplied by a weight of `dtype`: round_block.wgsl's mode and the values per
/// block. None when ggml keeps f32.
pub(crate) fn mode(dtype: GgmlType) -> Option<(u32, usize)> {
    match dtype {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => Some((1, 32)),
        GgmlType::Q4_1 | GgmlType::Q5_1 => Some((Q8_1, 32)),
        GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => Some((2, 256)),
        GgmlType::F16 => Some((3, 1)),
        GgmlType::BF16 => Some((4, 1)),
        GgmlType::F32 => None,
    }
}

/// Values per block in a round_block.wgsl mode.
pub(crate) fn block_size(mode: u32) -> usize {
    match mode {
        2 => 256,
        3 | 4 => 1,
        _ => 32,
    }
}

/// Q8_1 blocks, with the per-block sum term the product adds (`Rounded::sums`).
pub(crate) const Q8_1: u32 = 5;

/// Q8_K blocks of 256 (the K-quants' rounding); on the exact path with each block's d (`Rounded::sums`).
pub(crate) const Q8_K: u32 = 2;

/// The per-block tensor a rounding of [rows, cols] in `mode` writes next to the rounded values (round_delta in
/// round_block.wgsl), which every producer of a rounding allocates through this: Q8_1's delta [rows, cols / 32],
/// and on the exact path Q8_K's d [rows, cols / 256] (matmul_exact_k.wgsl rebuilds the Q8_K blocks from it).
pub(crate) fn delta_tensor(
    b: &GpuBackend,
    mode: u32,
    rows: usize,
    cols: usize,
) -> Option<GpuTensor> {
    match mode {
        Q8_1 => Some(b.tensor(rows, cols / 32)),
        Q8_K if b.rec.ctx.exact => Some(b.tensor(rows, cols / 256)),
        _ => None,
    }
}

/// The rounding mode a row of `cols` activations gets before a product with `dtype`; None when none applies (or
/// the row is not whole blocks, which the product then reports).
pub(crate) fn mode_for(dtype: GgmlType, cols: usize) -> Option<u32> {
    mode(dtype)
        .filter(|&(_, block)| cols.is_multiple_of(block))
        .map(|(mode, _)| mode)
}

/// `x` as ggml's CPU would see it multiplied by a weight of `dtype`, with Q8_1's sum term (or on the exact path
/// Q8_K's d); `x` itself when no rounding applies.
pub(crate) fn round_for(
    b: &GpuBackend,
    x: &GpuTensor,
    dtype: GgmlType,
) -> Result<(GpuTensor, Option<GpuTensor>)> {
    let Some(mode) = mode_for(dtype, x.cols) else {
        return Ok((x.clone(), None));
    };
    let out = b.tensor(x.rows, x.cols);
    let block = block_size(mode);
    let sums = delta_tensor(b, mode, x.rows, x.cols);
    let kernel = b.rec.kernel(
        "round_activations",
        SOURCE,
        &[("MODE", format!("{mode}u"))],
        &[Access::Read, Access::ReadWrite, Access::ReadWrite],
    );
    let params = Params {
        n: x.len() as u32,
        _pad: [0; 3],
    };
    let delta = sums.as_ref().map_or(b.unused(), |s| s.buf());
    let groups = grid((x.len() / block).div_ceil(WORKGROUP) as u32);
    b.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[x.buf(), out.buf(), delta],
        groups,
    )?;
    Ok((out, sums))
}

const CORRECTION: &str = include_str!("../../../../shaders/q8_1_correction.wgsl");

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
    if mode_for(w.dtype, x.cols) != Some(Q8_1) {
        return Ok(None);
    }
    let (rounded, sums) = cached(memo, x, Q8_1, || round_for(b, x, w.dtype))?;
    Ok(Some(super::matmul::matmul_with(
        b,
        &rounded,
        w,
        sums.as_ref(),
        strategy,
    )?))
}

/// x · Wᵀ for the K-quants on the exact path (matmul_exact_k.wgsl): the Q8_K rounding with its per-block d, from
/// the memo when a producer emitted it. None for other types, off the exact path, or rows not whole blocks.
pub(crate) fn k_quant_matmul(
    b: &GpuBackend,
    memo: &RefCell<Option<Rounded>>,
    x: &GpuTensor,
    w: &super::GpuWeight,
) -> Result<Option<GpuTensor>> {
    if !b.rec.ctx.exact
        || !super::matmul_exact::supports_k(w.dtype)
        || mode_for(w.dtype, x.cols) != Some(Q8_K)
    {
        return Ok(None);
    }
    let (mut rounded, mut sums) = cached(memo, x, Q8_K, || round_for(b, x, w.dtype))?;
    if sums.is_none() {
        // A producer that kept no d (none should on the exact path): round again, with it.
        (rounded, sums) = round_for(b, x, w.dtype)?;
        remember(memo, x, Q8_K, rounded.clone(), sums.clone());
    }
    let Some(d) = sums else {
        return Err(crate::Error::Backend(
            "the exact path's Q8_K rounding kept no block scales".into(),
        ));
    };
    Ok(Some(super::matmul_exact::matmul_exact_k(
        b, &rounded, w, &d,
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

/// Keeps `result` (and Q8_1's `sums`, or Q8_K's d) as `source` rounded in `mode`, for the products that read it next: kernels
/// that make activations can emit their rounding in the same pass.
pub(crate) fn remember(
    memo: &RefCell<Option<Rounded>>,
    source: &GpuTensor,
    mode: u32,
    result: GpuTensor,
    sums: Option<GpuTensor>,
) {
    *memo.borrow_mut() = Some(Rounded {
        source: source.clone(),
        mode,
        result,
        sums,
    });
}

/// The rounding `mode` of `x` from the memo, or `round` run and remembered.
fn cached(
    memo: &RefCell<Option<Rounded>>,
    x: &GpuTensor,
    mode: u32,
    round: impl FnOnce() -> Result<(GpuTensor, Option<GpuTensor>)>,
) -> Result<(GpuTensor, Option<GpuTensor>)> {
    if let Some(r) = memo.borrow().as_ref() {
        if r.mode == mode
            && std::rc::Rc::ptr_eq(&r.source.slab, &x.slab)
            && r.source.window().1 == x.window().1
        {
            return Ok((r.result.clone(), r.sums.clone()));
        }
    }
    let (result, sums) = round()?;
    remember(memo, x, mode, result.clone(), sums.clone());
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
    let Some(mode) = mode_for(dtype, x.cols) else {
        return Ok(x.clone());
    };
    Ok(cached(memo, x, mode, || round_for(b, x, dtype))?.0)
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
            &read(&g, &round_for(&g, &gx, GgmlType::Q4_0).unwrap().0),
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
            &read(&g, &round_for(&g, &gx, GgmlType::Q6K).unwrap().0),
            &want,
            0.0,
        );

        let want: Vec<f32> = x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        assert_close(
            "f16",
            &read(&g, &round_for(&g, &gx, GgmlType::F16).unwrap().0),
            &want,
            0.0,
        );
        let want: Vec<f32> = x
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        assert_close(
            "bf16",
            &read(&g, &round_for(&g, &gx, GgmlType::BF16).unwrap().0),
            &want,
            0.0,
        );
    }

    /// The norm and the gated activation emit the next product's rounding in their own pass: what they emit equals
    /// the CPU's quantiser applied to what they computed, bit for bit, in every mode.
    #[test]
    fn fused_roundings_match_the_cpu_quantisers() {
        use super::{mode_for, Q8_1};
        use crate::backend::gpu::{elementwise, norm};
        use crate::backend::Backend;
        use crate::config::Activation;
        let Some(g) = backend() else { return };
        // 3 rows of 512: two Q8_K blocks, sixteen Q8_0 blocks per row; more blocks than one 64-wide workgroup.
        let (rows, cols) = (3, 512);
        let x: Vec<f32> = values(rows * cols, 21).iter().map(|v| v * 4.0).collect();
        let r = values(rows * cols, 22);
        let w = values(cols, 23);
        let (gx, gr, gw) = (
            g.tensor_from_host(&x, rows, cols).unwrap(),
            g.tensor_from_host(&r, rows, cols).unwrap(),
            g.upload_vector(&w).unwrap(),
        );
        for dtype in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q6K,
            GgmlType::F16,
            GgmlType::BF16,
        ] {
            let mode = mode_for(dtype, cols).unwrap();
            let (_, normed, rounded) =
                norm::add_rms_norm_with(&g, &gx, &gr, None, &gw, 1e-6, Some(mode)).unwrap();
            let (rounded, sums) = rounded.expect("a rounding");
            let (want, want_sums) =
                crate::backend::gpu::testing::cpu_rounding(&read(&g, &normed), dtype);
            assert_close(
                &format!("add_rms_norm rounded for {dtype:?}"),
                &read(&g, &rounded),
                &want,
                0.0,
            );
            assert_eq!(sums.is_some(), mode == Q8_1);
            if let (Some(got), Some(want)) = (sums, want_sums) {
                assert_close("add_rms_norm Q8_1 sums", &read(&g, &got), &want, 0.0);
            }
            for act in [Activation::Silu, Activation::GeluTanhF16Table] {
                let plain = read(&g, &elementwise::gated(&g, &gx, &gr, act).unwrap());
                let (out, rounded, sums) =
                    elementwise::gated_round(&g, &gx, &gr, act, mode).unwrap();
                let out = read(&g, &out);
                assert_close(&format!("{act:?} before rounding"), &out, &plain, 0.0);
                // gate and up as column windows of one packed product give the same bits.
                let both: Vec<f32> = (0..rows)
                    .flat_map(|i| {
                        [&x[i * cols..(i + 1) * cols], &r[i * cols..(i + 1) * cols]].concat()
                    })
                    .collect();
                let packed = g.tensor_from_host(&both, rows, 2 * cols).unwrap();
                let halves = g.split_cols(&packed, &[cols, cols]).unwrap();
                let (from_windows, rounded_from_windows, _) =
                    elementwise::gated_round(&g, &halves[0], &halves[1], act, mode).unwrap();
                assert_close(
                    &format!("{act:?} of windows"),
                    &read(&g, &from_windows),
                    &out,
                    0.0,
                );
                let (want, want_sums) = crate::backend::gpu::testing::cpu_rounding(&out, dtype);
                assert_close(
                    &format!("{act:?} of windows, rounded"),
                    &read(&g, &rounded_from_windows),
                    &want,
                    0.0,
                );
                assert_close(
                    &format!("{act:?} rounded for {dtype:?}"),
                    &read(&g, &rounded),
                    &want,
                    0.0,
                );
                if let (Some(got), Some(want)) = (sums, want_sums) {
                    assert_close(&format!("{act:?} Q8_1 sums"), &read(&g, &got), &want, 0.0);
                }
            }
        }
    }
}
