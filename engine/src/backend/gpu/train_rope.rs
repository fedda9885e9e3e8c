//! The backward pass of RoPE, the rotation's transpose, in both layouts (shaders/train_rope.wgsl).

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuRope, GpuTensor};
use crate::config::RopeLayout;
use crate::{Error, Result};

const SOURCE: &str = concat!(
    include_str!("../../../../shaders/rope_common.wgsl"),
    include_str!("../../../../shaders/train_rope.wgsl")
);
/// Invocations per workgroup (WG in train_rope.wgsl).
const WORKGROUP: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    heads: u32,
    half: u32,
    theta_scale: f32,
}

/// dx of `rope(x, rope, heads, 0)` given dy: each pair rotated back by the forward's angle at its position.
pub(crate) fn rope_backward(
    g: &GpuBackend,
    dy: &GpuTensor,
    rope: &GpuRope,
    heads: usize,
) -> Result<GpuTensor> {
    if heads == 0 || dy.cols != heads * 2 * rope.half {
        return Err(Error::Backend(format!(
            "RoPE's backward for head size {} on {} columns of {heads} heads",
            2 * rope.half,
            dy.cols
        )));
    }
    let dy = super::train_ops::dense(g, dy)?;
    let out = g.tensor(dy.rows, dy.cols);
    let kernel = g.rec.kernel(
        "train_rope",
        SOURCE,
        &[(
            "ADJACENT",
            (rope.layout == RopeLayout::Adjacent).to_string(),
        )],
        &[Access::Read, Access::Read, Access::ReadWrite],
    );
    // The same angles as the forward (rope.rs): ggml's running product where the table has one.
    let params = Params {
        rows: dy.rows as u32,
        heads: heads as u32,
        half: rope.half as u32,
        theta_scale: rope.theta_scale.unwrap_or(0.0),
    };
    let pairs = dy.rows * heads * rope.half;
    g.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[dy.buf(), &rope.inv_freq, out.buf()],
        grid(pairs.div_ceil(WORKGROUP) as u32),
    )?;
    Ok(out)
}
