//! The CPU reference backend on candle-core. Quantized weights stay in their ggml blocks and go through candle's
//! quantized matmul (activations quantized to Q8 per block, as llama.cpp does); everything else is f32.

use super::{AttentionParams, Backend, KvSpec};
use crate::config::{Activation, RopeLayout};
use crate::quant::GgmlType;
use crate::{Error, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};
use std::sync::Arc;

pub struct CpuBackend {
    device: Device,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self { device: Device::Cpu }
    }
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }
}

pub enum CpuWeight {
    /// Float weights, dequantized to f32 `[rows, cols]`.
    Dense(Tensor),
    /// Quantized blocks, multiplied by candle's quantized kernels.
    Quantized { blocks: Arc<QTensor>, matmul: QMatMul },
}

pub struct CpuRope {
    inv_freq: Vec<f32>,
    layout: RopeLayout,
}

pub struct CpuKvCache {
    spec: KvSpec,
    /// `[positions, n_kv, head_dim]` for positions first_pos..first_pos + len.
    k: Option<Tensor>,
    v: Option<Tensor>,
    first_pos: usize,
}

fn ggml_dtype(t: GgmlType) -> GgmlDType {
    match t {
        GgmlType::F32 => GgmlDType::F32,
        GgmlType::F16 => GgmlDType::F16,
        GgmlType::BF16 => GgmlDType::BF16,
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q4K => GgmlDType::Q4K,
        GgmlType::Q5K => GgmlDType::Q5K,
        GgmlType::Q6K => GgmlDType::Q6K,
    }
}

impl Backend for CpuBackend {
    type Tensor = Tensor;
    type Weight = CpuWeight;
    type Rope = CpuRope;
    type KvCache = CpuKvCache;

    fn name(&self) -> String {
        "cpu (candle)".into()
    }

    fn upload_weight(&self, name: &str, dtype: GgmlType, shape: [usize; 2], bytes: &[u8]) -> Result<CpuWeight> {
        let expected = dtype.byte_len((shape[0] * shape[1]) as u64);
        if expected != Some(bytes.len() as u64) {
            return Err(Error::Malformed {
                format: crate::error::Format::Gguf,
                detail: format!("tensor `{name}` of shape {shape:?} as {} cannot be {} bytes", dtype.name(), bytes.len()),
            });
        }
        // candle takes dims innermost-last like PyTorch; our shape is [rows, cols] already.
        let q = qtensor_from_ggml(ggml_dtype(dtype), bytes, shape.to_vec(), &self.device)?;
        if dtype.is_quantized() {
            let blocks = Arc::new(q);
            let matmul = QMatMul::from_arc(blocks.clone())?;
            Ok(CpuWeight::Quantized { blocks, matmul })
        } else {
            Ok(CpuWeight::Dense(q.dequantize(&self.device)?))
        }
    }

    fn upload_vector(&self, values: &[f32]) -> Result<Tensor> {
        Ok(Tensor::from_slice(values, values.len(), &self.device)?)
    }

    fn rope_table(&self, inv_freq: &[f32], layout: RopeLayout) -> Result<CpuRope> {
        Ok(CpuRope { inv_freq: inv_freq.to_vec(), layout })
    }

    fn new_kv_cache(&self, spec: KvSpec) -> Result<CpuKvCache> {
        Ok(CpuKvCache { spec, k: None, v: None, first_pos: 0 })
    }

    fn reset_kv_cache(&self, cache: &mut CpuKvCache) -> Result<()> {
        cache.k = None;
        cache.v = None;
        cache.first_pos = 0;
        Ok(())
    }

    fn embed(&self, table: &CpuWeight, ids: &[u32], scale: Option<f32>) -> Result<Tensor> {
        let ids_t = Tensor::from_slice(ids, ids.len(), &self.device)?;
        let rows = match table {
            CpuWeight::Dense(t) => {
                let vocab = t.dim(0)?;
                if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(Error::InvalidArgument(format!("token id {bad} is outside the vocabulary ({vocab})")));
                }
                t.index_select(&ids_t, 0)?
            }
            CpuWeight::Quantized { blocks, .. } => {
                let vocab = blocks.shape().dims()[0];
                if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(Error::InvalidArgument(format!("token id {bad} is outside the vocabulary ({vocab})")));
                }
                blocks.embedding(&ids_t)?
            }
        };
        Ok(match scale {
            Some(s) => (rows * s as f64)?,
            None => rows,
        })
    }

    fn matmul(&self, x: &Tensor, w: &CpuWeight) -> Result<Tensor> {
        Ok(match w {
            CpuWeight::Dense(w) => x.matmul(&w.t()?)?,
            CpuWeight::Quantized { matmul, .. } => matmul.forward(x)?,
        })
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
        let group = weight.dim(0)?;
        let shape = x.shape().clone();
        let x = x.reshape(((), group))?;
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let y = x.broadcast_div(&(ms + eps as f64)?.sqrt()?)?.broadcast_mul(weight)?;
        Ok(y.reshape(shape)?)
    }

    fn rope(&self, x: &Tensor, rope: &CpuRope, heads: usize, start_pos: usize) -> Result<Tensor> {
        let (rows, width) = x.dims2()?;
        let half = rope.inv_freq.len();
        let head_dim = width / heads;
        if head_dim != 2 * half {
            return Err(Error::Backend(format!("RoPE table for head size {} used on head size {head_dim}", 2 * half)));
        }
        let mut cos = Vec::with_capacity(rows * half);
        let mut sin = Vec::with_capacity(rows * half);
        for r in 0..rows {
            let pos = (start_pos + r) as f32;
            for &f in &rope.inv_freq {
                let theta = pos * f;
                cos.push(theta.cos());
                sin.push(theta.sin());
            }
        }
        let x = x.reshape((rows, heads, head_dim))?;
        let out = match rope.layout {
            RopeLayout::SplitHalves => {
                let cos = Tensor::from_vec(cos, (rows, 1, half), &self.device)?;
                let sin = Tensor::from_vec(sin, (rows, 1, half), &self.device)?;
                let x1 = x.narrow(2, 0, half)?;
                let x2 = x.narrow(2, half, half)?;
                let a = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
                let b = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
                Tensor::cat(&[a, b], 2)?
            }
            RopeLayout::Adjacent => {
                let cos = Tensor::from_vec(cos, (rows, 1, half, 1), &self.device)?;
                let sin = Tensor::from_vec(sin, (rows, 1, half, 1), &self.device)?;
                let x = x.reshape((rows, heads, half, 2))?;
                let x1 = x.narrow(3, 0, 1)?;
                let x2 = x.narrow(3, 1, 1)?;
                let a = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
                let b = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
                Tensor::cat(&[a, b], 3)?
            }
        };
        Ok(out.reshape((rows, width))?)
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cache: &mut CpuKvCache,
        p: &AttentionParams,
        start_pos: usize,
    ) -> Result<Tensor> {
        let rows = q.dim(0)?;
        let (hq, hkv, d) = (p.n_heads, p.n_kv_heads, p.head_dim);
        let group = hq / hkv;
        let cached = cache.k.as_ref().map(|t| t.dim(0)).transpose()?.unwrap_or(0);
        if cache.first_pos + cached != start_pos {
            return Err(Error::Backend(format!(
                "KV cache holds positions up to {} but the batch starts at {start_pos}",
                cache.first_pos + cached
            )));
        }
        if start_pos + rows > cache.spec.max_positions {
            return Err(Error::InvalidArgument(format!(
                "the context is full: {} positions do not fit in {}",
                start_pos + rows,
                cache.spec.max_positions
            )));
        }
        let k = k.reshape((rows, hkv, d))?;
        let v = v.reshape((rows, hkv, d))?;
        let (keys, values) = match (&cache.k, &cache.v) {
            (Some(ck), Some(cv)) => (Tensor::cat(&[ck, &k], 0)?, Tensor::cat(&[cv, &v], 0)?),
            _ => (k, v),
        };
        let total = keys.dim(0)?;

        // [hkv, group * rows, d]: query head h reads kv head h / group.
        let qh = q.reshape((rows, hq, d))?.transpose(0, 1)?.reshape((hkv, group * rows, d))?;
        let kh = keys.transpose(0, 1)?.contiguous()?; // [hkv, total, d]
        let vh = values.transpose(0, 1)?.contiguous()?;
        let mut scores = (qh.contiguous()?.matmul(&kh.t()?)? * p.scale as f64)?; // [hkv, group*rows, total]
        if let Some(cap) = p.softcap {
            scores = ((scores / cap as f64)?.tanh()? * cap as f64)?;
        }
        let mut mask = Vec::with_capacity(rows * total);
        for r in 0..rows {
            let qpos = start_pos + r;
            for j in 0..total {
                let kpos = cache.first_pos + j;
                let visible = kpos <= qpos && p.window.is_none_or(|w| qpos < kpos + w);
                mask.push(if visible { 0f32 } else { f32::NEG_INFINITY });
            }
        }
        let mask = Tensor::from_vec(mask, (1, 1, rows, total), &self.device)?;
        let scores = scores.reshape((hkv, group, rows, total))?.broadcast_add(&mask)?;
        let max = scores.max_keepdim(D::Minus1)?;
        let e = scores.broadcast_sub(&max)?.exp()?;
        let probs = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
        let out = probs.reshape((hkv, group * rows, total))?.matmul(&vh)?; // [hkv, group*rows, d]
        let out = out.reshape((hq, rows, d))?.transpose(0, 1)?.reshape((rows, hq * d))?;

        // Keep only what a later query can still see.
        let keep_from = match cache.spec.window {
            Some(w) => (start_pos + rows + 1).saturating_sub(w).max(cache.first_pos),
            None => cache.first_pos,
        };
        let drop = keep_from - cache.first_pos;
        cache.k = Some(keys.narrow(0, drop, total - drop)?);
        cache.v = Some(values.narrow(0, drop, total - drop)?);
        cache.first_pos = keep_from;
        Ok(out)
    }

    fn gated_activation(&self, gate: &Tensor, up: &Tensor, act: Activation) -> Result<Tensor> {
        let g = match act {
            Activation::Silu => gate.silu()?,
            // candle's gelu is the tanh approximation (gelu_erf is the exact one).
            Activation::GeluTanh => gate.gelu()?,
        };
        Ok((g * up)?)
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok((a + b)?)
    }

    fn softcap(&self, x: &Tensor, cap: f32) -> Result<Tensor> {
        Ok(((x / cap as f64)?.tanh()? * cap as f64)?)
    }

    fn last_row(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dim(0)?;
        Ok(x.narrow(0, rows - 1, 1)?)
    }

    fn to_host(&self, x: &Tensor) -> Result<Vec<Vec<f32>>> {
        Ok(x.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }
}
