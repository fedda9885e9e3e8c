//! The backward pass of RMSNorm over rows or heads (shaders/train_norm.wgsl).

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor};
use crate::{Error, Result};

const SOURCE: &str = include_str!("../../../../shaders/train_norm.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    group: u32,
    groups: u32,
    cols: u32,
    eps: f32,
    /// (offset, stride) of x's and dy's rows in their buffers.
    x_at: [u32; 2],
    dy_at: [u32; 2],
}

/// dx of `rms_norm(x, w, eps)` given dy, over groups of `w.len()` values (one workgroup each).
pub(crate) fn rms_norm_backward(
    g: &GpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    dy: &GpuTensor,
    eps: f32,
) -> Result<GpuTensor> {
    let group = w.len();
    if group == 0 || !x.cols.is_multiple_of(group) || (x.rows, x.cols) != (dy.rows, dy.cols) {
        return Err(Error::Backend(format!(
            "RMSNorm's backward over groups of {group} of x [{}, {}] and dy [{}, {}]",
            x.rows, x.cols, dy.rows, dy.cols
        )));
    }
    let w = super::train_ops::dense(g, w)?;
    let out = g.tensor(x.rows, x.cols);
    let ((x_buf, x_at), (dy_buf, dy_at)) = (x.window(), dy.window());
    let params = Params {
        group: group as u32,
        groups: (x.len() / group) as u32,
        cols: x.cols as u32,
        eps,
        x_at: [x_at.offset, x_at.stride],
        dy_at: [dy_at.offset, dy_at.stride],
    };
    let kernel = g.rec.kernel(
        "train_norm",
        SOURCE,
        &[],
        &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
    );
    g.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[x_buf, w.buf(), dy_buf, out.buf()],
        grid(params.groups),
    )?;
    Ok(out)
}
