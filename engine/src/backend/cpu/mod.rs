//! The CPU reference backend. Activations are f32 candle tensors; the ops that shape a quantized model's logits —
//! quantized matmuls ([`qmatmul`]), RMSNorm, RoPE, gated activations and attention ([`ops`], `attention`) — are
//! computed with the arithmetic of llama.cpp's x86 CPU build, bit for bit, so GGUF models follow llama.cpp's
//! trajectory. Float-weight matmuls, additions and soft-capping stay on candle. The wasm build gives the same bits as
//! the native one for RoPE, norms and quantized matmuls: its fused multiply-adds are exact (one instruction where the
//! worker built with relaxed SIMD finds wasm's relaxed multiply-add fused, `relaxed`; emulated otherwise) and RoPE's
//! sines and cosines come from one implementation ([`libm`]); `exp` and `tanh` outside the 8-lane kernels (a row's
//! tail in SwiGLU, GELU-tanh, soft-capping) still use the platform's libm.

mod attention;
mod dot;
#[cfg(target_arch = "x86_64")]
mod dot_avx2;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod dot_simd128;
mod libm;
mod lora;
pub mod ops;
mod pages;
pub mod q8;
pub mod qmatmul;
#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
mod relaxed;
mod tasks;
mod train;
mod train_attention;

use super::{AttentionParams, Backend, KvSpec, Projections, WeightBytes};
use crate::config::{Activation, RopeLayout};
use crate::quant::GgmlType;
use crate::{Error, Result};
pub use attention::CpuKvCache;
use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use qmatmul::QMatrix;

/// Runs `f` on one of the CPU kernels' worker threads (natively; in wasm, right here: the threaded build makes the
/// calling worker thread one of the pool's, see the app's pool.rs, and the others have none). The
/// kernels split every product over rayon's pool: called from outside it, each of the ~200 products of a decoded
/// token wakes the pool's threads and puts the caller to sleep until they are done, and those round trips cost as
/// much as the arithmetic on a small model. Called from inside, the caller is one of the workers and the others stay
/// awake between products. Commands that run a model natively wrap their work in this.
pub fn on_worker_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(threaded)]
    return rayon::scope(|_| f());
    #[cfg(not(threaded))]
    f()
}

/// Whether the kernels' fused multiply-adds run as one instruction in wasm: the worker built with relaxed SIMD, in an
/// engine whose `f32x4.relaxed_madd` is fused (`relaxed`). Elsewhere in wasm they are emulated, to the same bits.
pub fn fused_madd() -> bool {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    return relaxed::fused();
    #[cfg(not(all(target_arch = "wasm32", target_feature = "relaxed-simd")))]
    false
}

/// Lets the relaxed SIMD build use its fused multiply-add where the engine has one (the default), or keeps it on the
/// emulation — the same bits, slower; the tests hold one against the other. Does nothing in the other builds.
pub fn allow_fused_madd(allowed: bool) {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    relaxed::allow(allowed);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "relaxed-simd")))]
    let _ = allowed;
}

/// How many threads the parallel loops split their work for (rayon's pool; one in a wasm build without threads).
pub fn threads() -> usize {
    #[cfg(threaded)]
    return rayon::current_num_threads();
    #[cfg(not(threaded))]
    1
}

/// `len` zeros for an op's output. A prompt's outputs are megabytes, and zeroing them on the calling thread while
/// the others wait was ~5% of a two-thread prefill; the pool zeroes them in pieces instead.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    #[cfg(threaded)]
    if len >= 1 << 16 && threads() > 1 {
        use rayon::prelude::*;
        let mut out = Vec::with_capacity(len);
        out.par_extend(rayon::iter::repeat_n(0f32, len));
        return out;
    }
    vec![0f32; len]
}

/// Runs `f(first_value, piece)` over pieces of `out` made of whole rows of `width` values, on the pool's threads
/// when there are enough rows to pay for it (a prefill). Rows are computed independently, so no value changes.
fn for_row_pieces(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    #[cfg(threaded)]
    {
        let rows = out.len() / width.max(1);
        if rows >= 8 && threads() > 1 {
            use rayon::prelude::*;
            let piece = rows.div_ceil(4 * threads()) * width;
            out.par_chunks_mut(piece)
                .enumerate()
                .for_each(|(i, out)| f(i * piece, out));
            return;
        }
    }
    #[cfg(not(threaded))]
    let _ = width;
    f(0, out)
}

pub struct CpuBackend {
    device: Device,
    /// Run the AVX2 + FMA kernels where the CPU has them (the results are the same either way).
    simd: bool,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            simd: true,
        }
    }
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend that runs only the portable kernels, to check them against the SIMD ones.
    pub fn portable() -> Self {
        Self {
            device: Device::Cpu,
            simd: false,
        }
    }
}

pub enum CpuWeight {
    /// Float weights as f32 `[rows, cols]`. ggml multiplies F16 (BF16) weights with activations rounded to F16
    /// (BF16), its `vec_dot_type` for them; `act_dtype` replays that rounding.
    Dense {
        weight: Tensor,
        act_dtype: Option<DType>,
    },
    /// Quantized blocks, multiplied with llama.cpp's numerics.
    Quantized(QMatrix),
}

pub struct CpuRope {
    inv_freq: Vec<f32>,
    /// ggml's per-pair angle multiplier, when the table allows computing angles its way.
    theta_scale: Option<f32>,
    layout: RopeLayout,
    /// cos and sin of every pair's angle for positions 0.. (`[position][cos half, sin half]`), filled as positions
    /// are first used: every layer rotates q and k at the same positions, and the sines and cosines (glibc's
    /// algorithm, see `libm`) cost more than the rotations.
    angles: std::sync::Mutex<Vec<f32>>,
}

/// Positions whose angles a [`CpuRope`] keeps (4 MiB for a head size of 256); later ones are computed per use.
const ROPE_CACHED_POSITIONS: usize = 8192;

impl CpuRope {
    /// Runs `f` on the angles of positions start..start + rows, from the table where it can hold them.
    fn with_angles<R>(&self, start: usize, rows: usize, f: impl FnOnce(&[f32]) -> R) -> R {
        let half = self.inv_freq.len();
        let fill = |table: &mut Vec<f32>, from: usize, to: usize| {
            let at = table.len();
            table.resize(at + (to - from) * 2 * half, 0.0);
            for (pos, row) in (from..to).zip(table[at..].chunks_exact_mut(2 * half)) {
                let (cos, sin) = row.split_at_mut(half);
                ops::rope_angles(&self.inv_freq, self.theta_scale, pos, cos, sin);
            }
        };
        if start + rows > ROPE_CACHED_POSITIONS || half == 0 {
            let mut angles = Vec::new();
            fill(&mut angles, start, start + rows);
            return f(&angles);
        }
        let mut table = self.angles.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let known = table.len() / (2 * half);
        if known < start + rows {
            fill(&mut table, known, start + rows);
        }
        f(&table[start * 2 * half..(start + rows) * 2 * half])
    }
}

impl Backend for CpuBackend {
    type Tensor = Tensor;
    type Weight = CpuWeight;
    type Rope = CpuRope;
    type KvCache = CpuKvCache;

    fn name(&self) -> String {
        "cpu".into()
    }

    fn upload_weight(
        &self,
        name: &str,
        dtype: GgmlType,
        shape: [usize; 2],
        bytes: &[u8],
    ) -> Result<CpuWeight> {
        let expected = dtype.byte_len((shape[0] * shape[1]) as u64);
        if expected != Some(bytes.len() as u64) {
            return Err(Error::Malformed {
                format: crate::error::Format::Gguf,
                detail: format!(
                    "tensor `{name}` of shape {shape:?} as {} cannot be {} bytes",
                    dtype.name(),
                    bytes.len()
                ),
            });
        }
        if dtype.is_quantized() {
            return Ok(CpuWeight::Quantized(QMatrix::new(
                dtype,
                shape[0],
                shape[1],
                pages::weight_buffer(bytes),
            )?));
        }
        let values = crate::quant::dequantize_to_vec(dtype, bytes, shape[0] * shape[1])?;
        let act_dtype = match dtype {
            GgmlType::F16 => Some(DType::F16),
            GgmlType::BF16 => Some(DType::BF16),
            _ => None,
        };
        Ok(CpuWeight::Dense {
            weight: Tensor::from_vec(values, (shape[0], shape[1]), &self.device)?,
            act_dtype,
        })
    }

    fn upload_projections(&self, parts: &[WeightBytes]) -> Result<Projections<CpuWeight>> {
        // One product over q, k and v (gate and up) instead of one each: a decoded token hands the thread pool four
        // products per layer instead of seven. Only quantized weights (candle's float gemm may block rows
        // differently by count), and only where each part would run the same ggml kernel on its own.
        match super::pack_bytes(parts) {
            Some(p)
                if p.dtype.is_quantized()
                    && parts.iter().all(|part| qmatmul::same_kernel(p.dtype, part.2[0], p.shape[0])) =>
            {
                Ok(Projections::Packed {
                    weight: self.upload_weight(&p.name, p.dtype, p.shape, &p.bytes)?,
                    widths: p.widths,
                })
            }
            _ => super::upload_apart(self, parts),
        }
    }

    fn upload_vector(&self, values: &[f32]) -> Result<Tensor> {
        Ok(Tensor::from_slice(values, values.len(), &self.device)?)
    }

    fn rope_table(&self, inv_freq: &[f32], layout: RopeLayout) -> Result<CpuRope> {
        Ok(CpuRope {
            inv_freq: inv_freq.to_vec(),
            theta_scale: ops::rope_theta_scale(inv_freq),
            layout,
            angles: Default::default(),
        })
    }

    fn new_kv_cache(&self, spec: KvSpec) -> Result<CpuKvCache> {
        Ok(CpuKvCache::new(spec))
    }

    fn reset_kv_cache(&self, cache: &mut CpuKvCache) -> Result<()> {
        cache.reset();
        Ok(())
    }

    fn embed(&self, table: &CpuWeight, ids: &[u32], scale: Option<f32>) -> Result<Tensor> {
        let ids_t = Tensor::from_slice(ids, ids.len(), &self.device)?;
        let rows = match table {
            CpuWeight::Dense { weight: t, .. } => {
                let vocab = t.dim(0)?;
                if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(Error::InvalidArgument(format!(
                        "token id {bad} is outside the vocabulary ({vocab})"
                    )));
                }
                t.index_select(&ids_t, 0)?
            }
            CpuWeight::Quantized(w) => {
                let cols = w.cols();
                let mut rows = vec![0f32; ids.len() * cols];
                for (&id, row) in ids.iter().zip(rows.chunks_exact_mut(cols.max(1))) {
                    w.dequantize_row(id as usize, row).map_err(|_| {
                        Error::InvalidArgument(format!(
                            "token id {id} is outside the vocabulary ({})",
                            w.rows()
                        ))
                    })?;
                }
                Tensor::from_vec(rows, (ids.len(), cols), &self.device)?
            }
        };
        Ok(match scale {
            Some(s) => (rows * s as f64)?,
            None => rows,
        })
    }

    fn matmul(&self, x: &Tensor, w: &CpuWeight) -> Result<Tensor> {
        match w {
            CpuWeight::Dense { weight, act_dtype } => {
                let x = match act_dtype {
                    Some(dt) => x.to_dtype(*dt)?.to_dtype(DType::F32)?,
                    None => x.clone(),
                };
                Ok(x.matmul(&weight.t()?)?)
            }
            CpuWeight::Quantized(w) => {
                let dims = x.dims();
                let cols = dims.last().copied().unwrap_or(0);
                same_cols(cols, w)?;
                let m = x.elem_count() / cols.max(1);
                let out = with_f32_slice(x, |values| {
                    if self.simd {
                        w.matmul(values, m)
                    } else {
                        w.matmul_portable(values, m)
                    }
                })?;
                let mut shape = dims.to_vec();
                if let Some(last) = shape.last_mut() {
                    *last = w.rows();
                }
                Ok(Tensor::from_vec(out, shape, &self.device)?)
            }
        }
    }

    fn add_low_rank(&self, y: &Tensor, x: &Tensor, a: &CpuWeight, b_t: &CpuWeight, scale: f32) -> Result<Tensor> {
        lora::add_low_rank(y, x, a, b_t, scale)
    }

    fn matmul_independent(&self, x: &Tensor, w: &CpuWeight) -> Result<Tensor> {
        match w {
            // candle's gemm may block rows differently by count: multiply each row alone.
            CpuWeight::Dense { .. } => {
                let rows = (0..x.dim(0)?)
                    .map(|i| self.matmul(&x.narrow(0, i, 1)?, w))
                    .collect::<Result<Vec<_>>>()?;
                self.concat_rows(&rows)
            }
            CpuWeight::Quantized(q) => {
                let cols = x.dim(1)?;
                same_cols(cols, q)?;
                let m = x.dim(0)?;
                let out = with_f32_slice(x, |values| {
                    if self.simd {
                        q.matmul_independent(values, m)
                    } else {
                        q.matmul_independent_portable(values, m)
                    }
                })?;
                Ok(Tensor::from_vec(out, (m, q.rows()), &self.device)?)
            }
        }
    }

    fn row(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        let rows = x.dim(0)?;
        if i >= rows {
            return Err(Error::Backend(format!("row {i} of a tensor with {rows} rows")));
        }
        Ok(x.narrow(0, i, 1)?.contiguous()?)
    }

    fn concat_rows(&self, parts: &[Tensor]) -> Result<Tensor> {
        if parts.is_empty() {
            return Err(Error::Backend("no rows to stack".into()));
        }
        Ok(Tensor::cat(parts, 0)?)
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
        let group = weight.dim(0)?;
        if group == 0 || !x.elem_count().is_multiple_of(group) {
            return Err(Error::Backend(format!(
                "RMSNorm over groups of {group} of a tensor of shape {:?}",
                x.dims()
            )));
        }
        let mut out = zeroed(x.elem_count());
        with_f32_slice(x, |xs| {
            with_f32_slice(weight, |w| {
                for_row_pieces(&mut out, group, |at, out| {
                    ops::rms_norm(&xs[at..at + out.len()], w, eps, out)
                });
                Ok(())
            })
        })?;
        Ok(Tensor::from_vec(out, x.shape(), &self.device)?)
    }

    fn rope(&self, x: &Tensor, rope: &CpuRope, heads: usize, start_pos: usize) -> Result<Tensor> {
        let (rows, width) = x.dims2()?;
        let half = rope.inv_freq.len();
        let head_dim = width.checked_div(heads).unwrap_or(0);
        if head_dim != 2 * half || heads * head_dim != width {
            return Err(Error::Backend(format!(
                "RoPE table for head size {} used on head size {head_dim}",
                2 * half
            )));
        }
        let mut out = with_f32_slice(x, |xs| Ok(xs.to_vec()))?;
        let adjacent = rope.layout == RopeLayout::Adjacent;
        rope.with_angles(start_pos, rows, |angles| {
            ops::rope_rows(self.simd, &mut out, angles, heads, half, adjacent)
        });
        Ok(Tensor::from_vec(out, (rows, width), &self.device)?)
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
        let out = with_f32_slice(q, |q| {
            with_f32_slice(k, |k| {
                with_f32_slice(v, |v| {
                    attention::attend(self.simd, q, k, v, rows, cache, p, start_pos)
                })
            })
        })?;
        Ok(Tensor::from_vec(
            out,
            (rows, p.n_heads * p.head_dim),
            &self.device,
        )?)
    }

    fn gated_activation(&self, gate: &Tensor, up: &Tensor, act: Activation) -> Result<Tensor> {
        if gate.dims() != up.dims() {
            return Err(Error::Backend(format!(
                "gate {:?} and up {:?} differ in shape",
                gate.dims(),
                up.dims()
            )));
        }
        let width = gate.dims().last().copied().unwrap_or(0).max(1);
        let mut out = zeroed(gate.elem_count());
        with_f32_slice(gate, |g| {
            with_f32_slice(up, |u| {
                for_row_pieces(&mut out, width, |at, out| {
                    let (g, u) = (&g[at..at + out.len()], &u[at..at + out.len()]);
                    match act {
                        Activation::Silu => ops::swiglu(self.simd, g, u, width, out),
                        Activation::GeluTanhF16Table => ops::geglu(self.simd, g, u, out),
                        Activation::GeluTanh => {
                            for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                                let inner = 0.797_884_6_f32 * (g + 0.044_715 * g * g * g);
                                *o = 0.5 * g * (1.0 + inner.tanh()) * u;
                            }
                        }
                    }
                });
                Ok(())
            })
        })?;
        Ok(Tensor::from_vec(out, gate.shape(), &self.device)?)
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let f32s = a.dtype() == DType::F32 && b.dtype() == DType::F32;
        if a.dims() != b.dims() || a.rank() != 2 || !f32s {
            return Ok((a + b)?);
        }
        // The residual stream: on the pool, without candle's own parallel map (its barrier showed in profiles).
        let width = a.dims()[1].max(1);
        let mut out = zeroed(a.elem_count());
        with_f32_slice(a, |xa| {
            with_f32_slice(b, |xb| {
                for_row_pieces(&mut out, width, |at, out| {
                    for ((o, &x), &y) in out.iter_mut().zip(&xa[at..]).zip(&xb[at..]) {
                        *o = x + y;
                    }
                });
                Ok(())
            })
        })?;
        Ok(Tensor::from_vec(out, a.shape(), &self.device)?)
    }

    fn softcap(&self, x: &Tensor, cap: f32) -> Result<Tensor> {
        Ok(((x / cap as f64)?.tanh()? * cap as f64)?)
    }

    fn matmul_parts(
        &self,
        x: &Tensor,
        w: &CpuWeight,
        widths: &[usize],
        independent_rows: bool,
    ) -> Result<Vec<Tensor>> {
        let q = match w {
            // A decoded token's outputs are small to copy apart, and its product keeps the one-part task split.
            CpuWeight::Quantized(q) if x.rank() == 2 && x.dim(0)? > 1 => q,
            _ => return super::wide_then_split(self, x, w, widths, independent_rows),
        };
        let (m, cols) = x.dims2()?;
        same_cols(cols, q)?;
        let parts = with_f32_slice(x, |values| {
            q.matmul_parts(values, m, widths, independent_rows, self.simd)
        })?;
        parts
            .into_iter()
            .zip(widths)
            .map(|(part, &w)| Ok(Tensor::from_vec(part, (m, w), &self.device)?))
            .collect()
    }

    fn split_cols(&self, x: &Tensor, widths: &[usize]) -> Result<Vec<Tensor>> {
        let total: usize = widths.iter().sum();
        if x.dim(1)? != total {
            return Err(Error::Backend(format!(
                "{} columns cannot be split into {widths:?}",
                x.dim(1)?
            )));
        }
        if x.dtype() != DType::F32 {
            let mut start = 0;
            return widths
                .iter()
                .map(|&w| {
                    let piece = x.narrow(1, start, w)?.contiguous()?;
                    start += w;
                    Ok(piece)
                })
                .collect();
        }
        let rows = x.dim(0)?;
        with_f32_slice(x, |xs| {
            let mut start = 0;
            widths
                .iter()
                .map(|&w| {
                    // A prompt's columns copied on the pool (a copy on the calling thread was ~2% of a prefill).
                    let mut part = zeroed(rows * w);
                    for_row_pieces(&mut part, w, |at, piece| {
                        let first = at / w.max(1);
                        for (r, row) in piece.chunks_exact_mut(w).enumerate() {
                            row.copy_from_slice(&xs[(first + r) * total + start..][..w]);
                        }
                    });
                    start += w;
                    Ok(Tensor::from_vec(part, (rows, w), &self.device)?)
                })
                .collect()
        })
    }

    fn last_row(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dim(0)?;
        Ok(x.narrow(0, rows - 1, 1)?)
    }

    async fn to_host(&self, x: &Tensor) -> Result<Vec<Vec<f32>>> {
        Ok(x.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }
}

/// Activations with `cols` columns fit a quantized weight's rows.
fn same_cols(cols: usize, w: &QMatrix) -> Result<()> {
    if cols != w.cols() {
        return Err(Error::Backend(format!(
            "matmul of activations with {cols} columns by a weight with {} columns",
            w.cols()
        )));
    }
    Ok(())
}

/// Runs `f` on a tensor's values as one contiguous f32 slice, without copying when they already are.
fn with_f32_slice<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let x = if x.dtype() == DType::F32 {
        x.contiguous()?
    } else {
        x.to_dtype(DType::F32)?.contiguous()?
    };
    let (storage, layout) = x.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(values)), Some((start, end))) => f(&values[start..end]),
        _ => Err(Error::Backend(
            "the CPU backend got a tensor that is not contiguous f32 on the CPU".into(),
        )),
    }
}
