//! Rotary position embedding in both layouts (shaders/rope.wgsl).

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuRope, GpuTensor};
use crate::config::RopeLayout;
use crate::{Error, Result};

const SOURCE: &str = include_str!("../../../shaders/rope.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    heads: u32,
    half: u32,
    start_pos: u32,
}

pub(crate) fn rope(b: &GpuBackend, x: &GpuTensor, rope: &GpuRope, heads: usize, start_pos: usize) -> Result<GpuTensor> {
    if heads == 0 || x.cols != heads * 2 * rope.half {
        return Err(Error::Backend(format!(
            "RoPE table for head size {} used on {} columns of {heads} heads",
            2 * rope.half,
            x.cols
        )));
    }
    let adjacent = rope.layout == RopeLayout::Adjacent;
    let out = b.tensor(x.rows, x.cols);
    let kernel = b.rec.kernel("rope", SOURCE, &[("ADJACENT", adjacent.to_string())], &[
        Access::Read,
        Access::Read,
        Access::ReadWrite,
    ]);
    let params = Params { rows: x.rows as u32, heads: heads as u32, half: rope.half as u32, start_pos: start_pos as u32 };
    let pairs = x.rows * heads * rope.half;
    b.rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x.buf(), &rope.inv_freq, out.buf()], grid(pairs.div_ceil(256) as u32))?;
    Ok(out)
}
