//! Training's products through frozen weights in their file layout: x · Wᵀ in f32 (the inference kernels of
//! matmul.rs, without the activation rounding `Backend::matmul` adds), and dy · W, the gradient of the product's
//! input (shaders/train_matmul.wgsl, dequantising with shaders/quant.wgsl).
//!
//! dy · W is split along the weight's rows when a product alone would leave the device idle: slices run side by side,
//! each writing a partial dx, and a second pass adds them in slice order.

use super::matmul::{dtype_define, matmul_with, ProductStrategy};
use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor, GpuWeight};
use crate::{Error, Result};

const SOURCE: &str = concat!(
    include_str!("../../../../shaders/quant.wgsl"),
    include_str!("../../../../shaders/train_matmul.wgsl")
);
/// Invocations per workgroup and activation rows per invocation (WG and ACTS in train_matmul.wgsl).
const WORKGROUP: usize = 64;
const ACTS: usize = 8;
/// Values per unit and parts per unit (quant.wgsl): an invocation owns one part.
const UNIT: usize = 32;
const PARTS: usize = 4;
/// Invocations a product should keep in flight: a real GPU's few thousand lanes times a few, or a CPU-emulated
/// adapter's cores times its SIMD width.
const TARGET_INVOCATIONS: usize = 32 * 1024;
const TARGET_INVOCATIONS_EMULATED: usize = 256;
/// Fewer weight rows than this per slice cost more in partial sums than they gain.
const MIN_ROWS_PER_SLICE: usize = 32;

/// quant.wgsl's `Params` (the uniform block its dequantisation reads), with the fields train_matmul.wgsl reuses named.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    chunk_rows: u32,
    first_row: u32,
    /// dy's columns (the weight's rows).
    out_stride: u32,
    row_bytes: u32,
    units: u32,
    /// quant.wgsl's ids_offset.
    rows_per_slice: u32,
    /// quant.wgsl's scale (unused).
    scale: f32,
    /// quant.wgsl's pad0, pad1, pad2.
    first_slice: u32,
    slices: u32,
    /// 1: add to what the target holds (chunks in turn).
    accumulate: u32,
}

/// x `[rows, in]` · Wᵀ in f32. The exact path refuses: its products of block types take activations rounded as ggml
/// rounds them, which training must not do.
pub(crate) fn matmul_f32(g: &GpuBackend, x: &GpuTensor, w: &GpuWeight) -> Result<GpuTensor> {
    if g.rec.ctx.exact {
        return Err(Error::Unsupported(
            "training on the GPU's exact path (it reproduces inference's rounding); use the default GPU path".into(),
        ));
    }
    if x.cols != w.cols {
        return Err(Error::Backend(format!(
            "[{}, {}] times a weight of {} columns",
            x.rows, x.cols, w.cols
        )));
    }
    let x = super::train_ops::dense(g, x)?;
    matmul_with(g, &x, w, None, ProductStrategy::for_backend(g))
}

/// How many slices each chunk of `w` is cut into for `rows` activation rows, or None where their partial sums would
/// not fit one binding (each chunk then adds its sums to dx in turn).
fn slices(g: &GpuBackend, w: &GpuWeight, rows: usize) -> Option<Vec<usize>> {
    let per_slice = rows.div_ceil(ACTS) * w.cols.div_ceil(UNIT) * PARTS;
    let target = if g.rec.ctx.cpu_emulated {
        TARGET_INVOCATIONS_EMULATED
    } else {
        TARGET_INVOCATIONS
    };
    let wanted = target.div_ceil(per_slice.max(1));
    let counts: Vec<usize> = w
        .chunks
        .iter()
        .map(|c| {
            (wanted * c.rows)
                .div_ceil(w.rows.max(1))
                .clamp(1, c.rows.div_ceil(MIN_ROWS_PER_SLICE).max(1))
        })
        .collect();
    let limit = g.rec.ctx.max_binding.min(g.rec.ctx.max_buffer) as usize;
    let total: usize = counts.iter().sum();
    (total == 1 || total * rows * w.cols * 4 <= limit).then_some(counts)
}

/// dy `[rows, out]` · W `[out, in]` → `[rows, in]`.
pub(crate) fn matmul_grad_x(g: &GpuBackend, dy: &GpuTensor, w: &GpuWeight) -> Result<GpuTensor> {
    if dy.cols != w.rows {
        return Err(Error::Backend(format!(
            "a gradient of {} columns through a weight of {} rows",
            dy.cols, w.rows
        )));
    }
    let dy = super::train_ops::dense(g, dy)?;
    let rows = dy.rows;
    let dx = g.tensor(rows, w.cols);
    if rows == 0 || w.cols == 0 {
        return Ok(dx);
    }
    let sliced = slices(g, w, rows);
    let counts = sliced.clone().unwrap_or_else(|| vec![1; w.chunks.len()]);
    let total: usize = counts.iter().sum();
    // Slices side by side write partial sums; one slice in all, or one per chunk in turn, write dx directly.
    let partial = (sliced.is_some() && total > 1).then(|| g.tensor(total * rows, w.cols));
    let target = partial.as_ref().unwrap_or(&dx);
    let access = [
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ];
    let kernel = g.rec.kernel_entry(
        "train_matmul",
        SOURCE,
        "grad_x",
        &[dtype_define(w.dtype)],
        &access,
    );
    let units = w.cols.div_ceil(UNIT);
    let mut first_slice = 0;
    let mut params = Params {
        rows: rows as u32,
        cols: w.cols as u32,
        chunk_rows: 0,
        first_row: 0,
        out_stride: w.rows as u32,
        row_bytes: w.row_bytes as u32,
        units: units as u32,
        rows_per_slice: 0,
        scale: 1.0,
        first_slice: 0,
        slices: 0,
        accumulate: 0,
    };
    for (chunk, &n) in w.chunks.iter().zip(&counts) {
        params.chunk_rows = chunk.rows as u32;
        params.first_row = chunk.first_row as u32;
        params.rows_per_slice = chunk.rows.div_ceil(n) as u32;
        params.slices = n as u32;
        // Without partial sums every chunk writes dx itself (slice 0), the first storing, the rest adding.
        (params.first_slice, params.accumulate) = match partial {
            Some(_) => (first_slice as u32, 0),
            None => (0, (first_slice > 0) as u32),
        };
        let invocations = n * rows.div_ceil(ACTS) * units * PARTS;
        g.rec.dispatch(
            &kernel,
            bytemuck::bytes_of(&params),
            &[&chunk.buf, dy.buf(), target.buf(), g.unused()],
            grid(invocations.div_ceil(WORKGROUP) as u32),
        )?;
        first_slice += n;
    }
    if let Some(partial) = &partial {
        let reduce = g.rec.kernel_entry(
            "train_matmul",
            SOURCE,
            "reduce",
            &[dtype_define(w.dtype)],
            &access,
        );
        params.slices = total as u32;
        params.accumulate = 0;
        g.rec.dispatch(
            &reduce,
            bytemuck::bytes_of(&params),
            &[&w.chunks[0].buf, dy.buf(), partial.buf(), dx.buf()],
            grid((rows * w.cols).div_ceil(WORKGROUP) as u32),
        )?;
    }
    Ok(dx)
}
