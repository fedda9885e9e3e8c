//! KV-cache append and attention.

use super::{GpuBackend, GpuKvCache, GpuTensor};
use crate::backend::AttentionParams;
use crate::{Error, Result};

pub(crate) fn attention(
    _b: &GpuBackend,
    _q: &GpuTensor,
    _k: &GpuTensor,
    _v: &GpuTensor,
    _cache: &mut GpuKvCache,
    _p: &AttentionParams,
    _start_pos: usize,
) -> Result<GpuTensor> {
    Err(Error::Unsupported("GPU attention".into()))
}
