//! op(a) · op(b), op transposing when asked: the LoRA products of training on small f32 tensors
//! (shaders/train_mm.wgsl).

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor};
use crate::{Error, Result};

const SOURCE: &str = include_str!("../../../../shaders/train_mm.wgsl");
/// Invocations per workgroup (WG in train_mm.wgsl).
const WORKGROUP: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_t: u32,
    b_t: u32,
    _pad: u32,
    /// (offset, stride) of a's and b's stored rows in their buffers.
    a_at: [u32; 2],
    b_at: [u32; 2],
}

pub(crate) fn mm(
    g: &GpuBackend,
    a: &GpuTensor,
    b: &GpuTensor,
    a_t: bool,
    b_t: bool,
) -> Result<GpuTensor> {
    let (m, k) = if a_t {
        (a.cols, a.rows)
    } else {
        (a.rows, a.cols)
    };
    let (k2, n) = if b_t {
        (b.cols, b.rows)
    } else {
        (b.rows, b.cols)
    };
    if k != k2 {
        return Err(Error::Backend(format!(
            "a product of [{m}, {k}] by [{k2}, {n}] (from [{}, {}]{} and [{}, {}]{})",
            a.rows,
            a.cols,
            if a_t { "ᵀ" } else { "" },
            b.rows,
            b.cols,
            if b_t { "ᵀ" } else { "" }
        )));
    }
    let out = g.tensor(m, n);
    let (a_buf, a_at) = a.window();
    let (b_buf, b_at) = b.window();
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        a_t: a_t as u32,
        b_t: b_t as u32,
        _pad: 0,
        a_at: [a_at.offset, a_at.stride],
        b_at: [b_at.offset, b_at.stride],
    };
    let kernel = g.rec.kernel(
        "train_mm",
        SOURCE,
        &[],
        &[Access::Read, Access::Read, Access::ReadWrite],
    );
    g.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[a_buf, b_buf, out.buf()],
        grid((m * n).div_ceil(WORKGROUP) as u32),
    )?;
    Ok(out)
}
