//! RMSNorm over rows or heads (shaders/rms_norm.wgsl).

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor};
use crate::{Error, Result};

const SOURCE: &str = include_str!("../../../shaders/rms_norm.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    group: u32,
    groups: u32,
    eps: f32,
    _pad: u32,
}

pub(crate) fn rms_norm(b: &GpuBackend, x: &GpuTensor, w: &GpuTensor, eps: f32) -> Result<GpuTensor> {
    let group = w.len();
    if group == 0 || !x.len().is_multiple_of(group) {
        return Err(Error::Backend(format!("RMSNorm over groups of {group} of a [{}, {}] tensor", x.rows, x.cols)));
    }
    let groups = x.len() / group;
    let out = b.tensor(x.rows, x.cols);
    let kernel = b.rec.kernel("rms_norm", SOURCE, &[], &[Access::Read, Access::Read, Access::ReadWrite]);
    let params = Params { group: group as u32, groups: groups as u32, eps, _pad: 0 };
    b.rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x.buf(), w.buf(), out.buf()], grid(groups as u32))?;
    Ok(out)
}
