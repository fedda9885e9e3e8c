//! Matrix products and embedding gathers over weights in their file layout.

use super::{GpuBackend, GpuTensor, GpuWeight};
use crate::{Error, Result};

pub(crate) fn matmul(_b: &GpuBackend, _x: &GpuTensor, w: &GpuWeight) -> Result<GpuTensor> {
    Err(Error::Unsupported(format!("GPU matmul for {}", w.dtype.name())))
}

pub(crate) fn embed(_b: &GpuBackend, w: &GpuWeight, _ids: &[u32], _scale: f32) -> Result<GpuTensor> {
    Err(Error::Unsupported(format!("GPU embedding for {}", w.dtype.name())))
}
