//! The LoRA term y + s · (x · Aᵀ) · B (shaders/lora.wgsl; B given transposed): two dispatches per decorated product — the rank-r
//! projection of x, then B's product added into y in place — recorded like every op, so a decode step with
//! adapters still submits once.

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor, GpuWeight};
use crate::quant::GgmlType;
use crate::{Error, Result};

const SOURCE: &str = include_str!("../../../../shaders/lora.wgsl");
/// Invocations per workgroup (WG in lora.wgsl).
const WORKGROUP: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    rank: u32,
    outputs: u32,
    scale: f32,
    x_offset: u32,
    x_stride: u32,
    _pad: u32,
}

/// The one buffer of an f32 LoRA matrix (they are far below the binding limit, so never split).
fn f32_buffer(w: &GpuWeight) -> Result<&super::GpuBuf> {
    match w.chunks.as_slice() {
        [chunk] if w.dtype == GgmlType::F32 => Ok(&chunk.buf),
        _ => Err(Error::Backend(
            "a LoRA matrix must be f32 in one buffer".into(),
        )),
    }
}

pub(crate) fn add_low_rank(
    backend: &GpuBackend,
    y: &GpuTensor,
    x: &GpuTensor,
    a: &GpuWeight,
    b_t: &GpuWeight,
    scale: f32,
) -> Result<GpuTensor> {
    let (rank, outputs) = (a.rows, b_t.cols);
    if a.cols != x.cols || b_t.rows != rank || (y.rows, y.cols) != (x.rows, outputs) || !y.is_dense() {
        return Err(Error::Backend(format!(
            "a LoRA term of A [{rank}, {}] and Bᵀ [{}, {outputs}] for x [{}, {}] and y [{}, {}]",
            a.cols, b_t.rows, x.rows, x.cols, y.rows, y.cols
        )));
    }
    let t = backend.tensor(x.rows, rank);
    let (x_buf, at) = x.window();
    let params = Params {
        rows: x.rows as u32,
        cols: x.cols as u32,
        rank: rank as u32,
        outputs: outputs as u32,
        scale,
        x_offset: at.offset,
        x_stride: at.stride,
        _pad: 0,
    };
    let access = [Access::Read, Access::Read, Access::ReadWrite, Access::Read, Access::ReadWrite];
    let bufs = [x_buf, f32_buffer(a)?, t.buf(), f32_buffer(b_t)?, y.buf()];
    let rec = &backend.rec;
    let down = rec.kernel_entry("lora", SOURCE, "down", &[], &access);
    rec.dispatch(&down, bytemuck::bytes_of(&params), &bufs, grid((x.rows * rank) as u32))?;
    let up = rec.kernel_entry("lora", SOURCE, "up", &[], &access);
    let groups = (x.rows * outputs).div_ceil(WORKGROUP) as u32;
    rec.dispatch(&up, bytemuck::bytes_of(&params), &bufs, grid(groups))?;
    Ok(y.clone())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_close, backend, read, values};
    use crate::backend::cpu::CpuBackend;
    use crate::backend::Backend;
    use crate::quant::GgmlType;

    /// The GPU's LoRA term against the CPU's, on shapes off the 64-wide workgroups: 3 rows, 150 inputs, rank 5,
    /// 70 outputs, and an x that is a column window of a wider tensor (as split products hand it over).
    #[test]
    fn low_rank_term_matches_the_cpu() {
        let Some(g) = backend() else { return };
        let c = CpuBackend::new();
        let (rows, inputs, rank, outputs) = (3, 150, 5, 70);
        let wide = values(rows * (inputs + 10), 1);
        let (a, b_t, y) = (values(rank * inputs, 2), values(rank * outputs, 3), values(rows * outputs, 4));
        let x: Vec<f32> = wide.chunks(inputs + 10).flat_map(|r| r[10..].to_vec()).collect();
        let bytes = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
        let (ga, gb) = (
            g.upload_weight("a", GgmlType::F32, [rank, inputs], &bytes(&a)).unwrap(),
            g.upload_weight("b", GgmlType::F32, [rank, outputs], &bytes(&b_t)).unwrap(),
        );
        let (ca, cb) = (
            c.upload_weight("a", GgmlType::F32, [rank, inputs], &bytes(&a)).unwrap(),
            c.upload_weight("b", GgmlType::F32, [rank, outputs], &bytes(&b_t)).unwrap(),
        );
        let gwide = g.tensor_from_host(&wide, rows, inputs + 10).unwrap();
        let gx = g.split_cols(&gwide, &[10, inputs]).unwrap().pop().unwrap();
        let gy = g.tensor_from_host(&y, rows, outputs).unwrap();
        let got = read(&g, &g.add_low_rank(&gy, &gx, &ga, &gb, 0.75).unwrap());
        let cx = candle_core::Tensor::from_slice(&x, (rows, inputs), &candle_core::Device::Cpu).unwrap();
        let cy = candle_core::Tensor::from_slice(&y, (rows, outputs), &candle_core::Device::Cpu).unwrap();
        let want = futures::executor::block_on(c.to_host(&c.add_low_rank(&cy, &cx, &ca, &cb, 0.75).unwrap()))
            .unwrap()
            .concat();
        assert_close("lora term", &got, &want, 1e-5);
        // Shapes that do not fit are refused, not run.
        assert!(g.add_low_rank(&gy, &gy, &ga, &gb, 1.0).is_err());
    }
}
