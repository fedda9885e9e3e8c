//! The GPU backend: every op is one of our WGSL kernels (shaders/ at the top of the repository), launched through wgpu on Vulkan, Metal,
//! DX12 or the browser's WebGPU.
//!
//! Ops only record dispatches; nothing is submitted until a result is read back, so a decode step is one submit.
//! Activations come from a pool and bind groups are cached, so after the first token a step creates nothing.

mod activation_rounding;
mod attention;
mod attention_exact;
mod bandwidth;
pub mod context;
mod elementwise;
mod exact;
mod lora;
mod matmul;
mod matmul_exact;
mod norm;
mod pool;
mod recorder;
mod rope;
mod rope_exact;
#[cfg(test)]
pub(crate) mod testing;
mod topk;
mod train;
mod train_attention;
mod train_loss;
mod train_matmul;
mod train_mm;
mod train_norm;
mod train_ops;
mod train_rope;

use super::{
    AttentionParams, Backend, KvSpec, Projections, SamplingLogits, WeightBytes, TOP_K_CANDIDATES,
};
use crate::config::{Activation, RopeLayout};
use crate::quant::GgmlType;
use crate::{Error, Result};
pub use context::{AdapterSummary, GpuContext, GpuOptions};
pub use pool::Counters;
use pool::{GpuBuf, Slab};
use recorder::Recorder;
use std::rc::Rc;

/// Rows of one forward pass at most; sliding-window caches keep window + this many positions.
pub const MAX_ROWS_PER_FORWARD: usize = 256;

pub struct GpuBackend {
    rec: Recorder,
    /// The last activations rounded for a weight type: q, k and v (and gate and up) share their input.
    rounded: std::cell::RefCell<Option<activation_rounding::Rounded>>,
    /// Bound where a kernel variant declares a writable output it never writes.
    unused: GpuBuf,
    /// ggml's f16 GELU table, uploaded for the exact path's first GELU (elementwise.rs).
    gelu_table: std::cell::OnceCell<GpuBuf>,
}

/// An f32 activation `[rows, cols]` in a pooled buffer: dense, or (`split_cols`) a window of columns of a wider
/// tensor, whose element (r, c) sits at r · stride + offset + c. Only kernels that take a `Layout` read windows.
#[derive(Clone)]
pub struct GpuTensor {
    slab: Rc<Slab>,
    pub rows: usize,
    pub cols: usize,
    offset: usize,
    stride: usize,
}

/// Where a tensor's values sit in its buffer, as kernels that read column windows take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub offset: u32,
    pub stride: u32,
}

impl GpuTensor {
    /// The buffer of a dense tensor. Kernels that do not take a `Layout` see every tensor through this.
    pub(crate) fn buf(&self) -> &GpuBuf {
        debug_assert!(
            self.is_dense(),
            "a column window reached a kernel that reads dense tensors"
        );
        self.slab.buf()
    }

    /// The buffer, and where this tensor's values sit in it.
    pub(crate) fn window(&self) -> (&GpuBuf, Layout) {
        (
            self.slab.buf(),
            Layout {
                offset: self.offset as u32,
                stride: self.stride as u32,
            },
        )
    }

    pub(crate) fn is_dense(&self) -> bool {
        self.offset == 0 && self.stride == self.cols
    }

    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Consecutive rows of a weight in one buffer: no buffer exceeds the storage-binding limit.
pub struct WeightChunk {
    pub(crate) buf: GpuBuf,
    pub(crate) first_row: usize,
    pub(crate) rows: usize,
}

/// A weight `[rows, cols]` in its file layout (GGUF blocks, or F32/F16/BF16), split by rows across buffers.
pub struct GpuWeight {
    pub dtype: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Bytes of one row (whole blocks; 2-byte aligned for every quant type).
    pub row_bytes: usize,
    pub(crate) chunks: Vec<WeightChunk>,
}

pub struct GpuRope {
    inv_freq: GpuBuf,
    theta_scale: Option<f32>,
    half: usize,
    layout: RopeLayout,
    /// The exact path's (cos, sin) table, computed by the CPU's own code on first use (rope_exact.rs).
    exact: rope_exact::Table,
}

/// One layer's keys and values, f32 `[capacity, n_kv_heads, head_dim]`; position p lives in slot p % capacity.
pub struct GpuKvCache {
    pub(crate) k: GpuBuf,
    pub(crate) v: GpuBuf,
    pub(crate) spec: KvSpec,
    pub(crate) capacity: usize,
}

impl GpuBackend {
    /// Opens the default adapter. Fails with a message (never panics) when there is none.
    pub async fn new(options: &GpuOptions) -> Result<Self> {
        let ctx = GpuContext::new(options).await?;
        Ok(Self::with_context(Rc::new(ctx)))
    }

    pub fn with_context(ctx: Rc<GpuContext>) -> Self {
        let usage = wgpu::BufferUsages::STORAGE;
        let rec = Recorder::new(ctx);
        let unused = rec.pool.create(&rec.ctx.device, 16, usage, "unused");
        Self {
            rec,
            rounded: Default::default(),
            unused,
            gelu_table: Default::default(),
        }
    }

    pub fn adapter(&self) -> &AdapterSummary {
        &self.rec.ctx.summary
    }

    /// Where the GPU time went, per kernel, when the process runs with AVIARY_GPU_PROFILE set (every dispatch is
    /// then submitted and timed alone).
    pub fn profile_report(&self) -> Option<String> {
        self.rec.profile_report()
    }

    /// Frees the device and everything on it now; every later op reports the loss (as a real device loss does).
    pub fn destroy(&self) {
        self.rec.ctx.device.destroy();
    }

    /// Whether kernels use f16 arithmetic.
    pub fn uses_f16(&self) -> bool {
        self.rec.ctx.f16
    }

    pub(crate) fn unused(&self) -> &GpuBuf {
        &self.unused
    }

    pub(crate) fn tensor(&self, rows: usize, cols: usize) -> GpuTensor {
        GpuTensor {
            slab: self
                .rec
                .pool
                .take(&self.rec.ctx.device, (rows * cols * 4) as u64),
            rows,
            cols,
            offset: 0,
            stride: cols,
        }
    }

    fn storage_buffer(&self, bytes: &[u8], label: &str) -> GpuBuf {
        let buf = self.rec.pool.create(
            &self.rec.ctx.device,
            bytes.len() as u64,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            label,
        );
        write_padded(&self.rec.ctx.queue, &buf, bytes);
        buf
    }

    /// Uploads f32 values as a `[rows, cols]` activation (tests and the embedding of host-made inputs).
    pub fn tensor_from_host(&self, values: &[f32], rows: usize, cols: usize) -> Result<GpuTensor> {
        if values.len() != rows * cols {
            return Err(Error::InvalidArgument(format!(
                "{} values cannot be a [{rows}, {cols}] tensor",
                values.len()
            )));
        }
        let t = self.tensor(rows, cols);
        // Work recorded earlier may still read this pooled buffer: copy through the recorder so order holds.
        let staging = self.storage_buffer(bytemuck::cast_slice(values), "host tensor");
        self.rec
            .copy(&staging, 0, t.buf(), 0, (values.len() * 4) as u64);
        self.rec.flush()?;
        Ok(t)
    }
}

/// A sliding-window ring keeps window + MAX_ROWS_PER_FORWARD positions, so a pass may add at most that many.
fn check_window_rows(q: &GpuTensor, cache: &GpuKvCache) -> Result<()> {
    if q.rows > MAX_ROWS_PER_FORWARD && cache.spec.window.is_some() {
        return Err(Error::InvalidArgument(format!(
            "the GPU backend runs at most {MAX_ROWS_PER_FORWARD} positions per pass through a sliding-window layer"
        )));
    }
    Ok(())
}

/// queue.write_buffer needs a multiple of 4 bytes.
fn write_padded(queue: &wgpu::Queue, buf: &GpuBuf, bytes: &[u8]) {
    let whole = bytes.len() / 4 * 4;
    if whole > 0 {
        queue.write_buffer(&buf.buffer, 0, &bytes[..whole]);
    }
    if whole < bytes.len() {
        let mut tail = [0u8; 4];
        tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
        queue.write_buffer(&buf.buffer, whole as u64, &tail);
    }
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;
    type Weight = GpuWeight;
    type Rope = GpuRope;
    type KvCache = GpuKvCache;

    fn name(&self) -> String {
        let precision = if self.rec.ctx.exact {
            "exact (the CPU backend's bits)"
        } else if self.rec.ctx.f16 {
            "f16 KV cache and attention"
        } else {
            "f32"
        };
        format!("gpu: {}, {precision}", self.rec.ctx.summary)
    }

    fn upload_weight(
        &self,
        name: &str,
        dtype: GgmlType,
        shape: [usize; 2],
        bytes: &[u8],
    ) -> Result<GpuWeight> {
        let [rows, cols] = shape;
        let row_bytes = dtype.byte_len(cols as u64).ok_or_else(|| {
            Error::Unsupported(format!(
                "tensor `{name}`: {cols} columns are not whole {} blocks",
                dtype.name()
            ))
        })? as usize;
        if row_bytes * rows != bytes.len() {
            return Err(Error::Malformed {
                format: crate::error::Format::Gguf,
                detail: format!(
                    "tensor `{name}` of shape {shape:?} as {} cannot be {} bytes",
                    dtype.name(),
                    bytes.len()
                ),
            });
        }
        let ctx = &self.rec.ctx;
        let limit = ctx.max_binding.min(ctx.max_buffer) as usize;
        if row_bytes + 4 > limit {
            return Err(Error::Backend(format!(
                "tensor `{name}`: one row is {row_bytes} bytes, more than the GPU adapter {} binds",
                ctx.summary
            )));
        }
        let rows_per_chunk = ((limit - 4) / row_bytes.max(1)).max(1);
        let mut chunks = Vec::new();
        let mut first_row = 0;
        while first_row < rows.max(1) {
            let n = rows_per_chunk.min(rows - first_row);
            let data = &bytes[first_row * row_bytes..(first_row + n) * row_bytes];
            chunks.push(WeightChunk {
                buf: self.storage_buffer(data, name),
                first_row,
                rows: n,
            });
            first_row += n;
            if rows == 0 {
                break;
            }
        }
        self.rec.ctx.errors.check()?;
        Ok(GpuWeight {
            dtype,
            rows,
            cols,
            row_bytes,
            chunks,
        })
    }

    fn upload_projections(&self, parts: &[WeightBytes]) -> Result<Projections<GpuWeight>> {
        // One product over rows of one type and width (q, k, v; gate, up) instead of one per weight: fewer
        // dispatches, the activations read once. Each row keeps its file layout.
        match super::pack_bytes(parts) {
            Some(p) => Ok(Projections::Packed {
                weight: self.upload_weight(&p.name, p.dtype, p.shape, &p.bytes)?,
                widths: p.widths,
            }),
            None => super::upload_apart(self, parts),
        }
    }

    fn check_capacity(&self, matrices: &[(&str, GgmlType, [usize; 2])], total: u64) -> Result<()> {
        let ctx = &self.rec.ctx;
        let limit = ctx.max_binding.min(ctx.max_buffer);
        for &(name, dtype, [_, cols]) in matrices {
            let row = dtype.byte_len(cols as u64).unwrap_or(u64::MAX);
            if row + 4 > limit {
                return Err(Error::Backend(format!(
                    "this model does not fit the GPU adapter {}: a row of `{name}` is {row} bytes, more than the {limit} \
                     bytes it binds per buffer; use the CPU backend",
                    ctx.summary
                )));
            }
        }
        // WebGPU has no memory query: running out while uploading comes back as an error from the upload.
        let _ = total;
        Ok(())
    }

    fn upload_vector(&self, values: &[f32]) -> Result<GpuTensor> {
        let t = self.tensor(1, values.len());
        write_padded(&self.rec.ctx.queue, t.buf(), bytemuck::cast_slice(values));
        Ok(t)
    }

    fn rope_table(&self, inv_freq: &[f32], layout: RopeLayout) -> Result<GpuRope> {
        Ok(GpuRope {
            inv_freq: self.storage_buffer(bytemuck::cast_slice(inv_freq), "rope"),
            theta_scale: crate::backend::cpu::ops::rope_theta_scale(inv_freq),
            half: inv_freq.len(),
            layout,
            exact: rope_exact::Table::new(inv_freq),
        })
    }

    fn new_kv_cache(&self, spec: KvSpec) -> Result<GpuKvCache> {
        let capacity = match spec.window {
            Some(w) => spec.max_positions.min(w + MAX_ROWS_PER_FORWARD),
            None => spec.max_positions,
        }
        .max(1);
        let bytes =
            (capacity * spec.n_kv_heads * spec.head_dim * attention::kv_element_bytes(self)) as u64;
        let ctx = &self.rec.ctx;
        if bytes > ctx.max_binding {
            return Err(Error::Backend(format!(
                "a KV cache of {capacity} positions needs {bytes} bytes per layer, more than the GPU adapter {} binds; \
                 use a shorter context",
                ctx.summary
            )));
        }
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let k = self.rec.pool.create(&ctx.device, bytes, usage, "k cache");
        let v = self.rec.pool.create(&ctx.device, bytes, usage, "v cache");
        Ok(GpuKvCache {
            k,
            v,
            spec,
            capacity,
        })
    }

    fn reset_kv_cache(&self, _cache: &mut GpuKvCache) -> Result<()> {
        // Positions are rewritten before they are read; nothing to clear.
        Ok(())
    }

    fn embed(&self, table: &GpuWeight, ids: &[u32], scale: Option<f32>) -> Result<GpuTensor> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= table.rows) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary ({})",
                table.rows
            )));
        }
        matmul::embed(self, table, ids, scale.unwrap_or(1.0))
    }

    fn matmul(&self, x: &GpuTensor, w: &GpuWeight) -> Result<GpuTensor> {
        if x.cols != w.cols {
            return Err(Error::Backend(format!(
                "matmul of activations with {} columns by a weight with {} columns",
                x.cols, w.cols
            )));
        }
        // Like the CPU backend (and llama.cpp), multiply by the activations as ggml quantises them for this weight.
        if let Some(out) = activation_rounding::q8_1_matmul(self, &self.rounded, x, w)? {
            return Ok(out);
        }
        if let Some(out) = activation_rounding::k_quant_matmul(self, &self.rounded, x, w)? {
            return Ok(out);
        }
        let x = activation_rounding::round_cached(self, &self.rounded, x, w.dtype)?;
        matmul::matmul(self, &x, w)
    }

    fn add_low_rank(
        &self,
        y: &GpuTensor,
        x: &GpuTensor,
        a: &GpuWeight,
        b_t: &GpuWeight,
        scale: f32,
    ) -> Result<GpuTensor> {
        lora::add_low_rank(self, y, x, a, b_t, scale)
    }

    fn rms_norm(&self, x: &GpuTensor, weight: &GpuTensor, eps: f32) -> Result<GpuTensor> {
        norm::rms_norm(self, x, weight, eps)
    }

    fn add_rms_norm(
        &self,
        x: &GpuTensor,
        r: &GpuTensor,
        w: &GpuTensor,
        eps: f32,
    ) -> Result<(GpuTensor, GpuTensor)> {
        norm::add_rms_norm(self, x, r, w, eps)
    }

    fn add_rms_norm_for(
        &self,
        x: &GpuTensor,
        r: &GpuTensor,
        r_norm: Option<&GpuTensor>,
        w: &GpuTensor,
        eps: f32,
        next: &GpuWeight,
    ) -> Result<(GpuTensor, GpuTensor)> {
        // The rounding the next products need comes out of the norm's pass instead of one of its own.
        let mode = activation_rounding::mode_for(next.dtype, x.cols);
        let (sum, normed, rounded) = norm::add_rms_norm_with(self, x, r, r_norm, w, eps, mode)?;
        if let (Some(mode), Some((rounded, sums))) = (mode, rounded) {
            activation_rounding::remember(&self.rounded, &normed, mode, rounded, sums);
        }
        Ok((sum, normed))
    }

    fn rope(
        &self,
        x: &GpuTensor,
        rope: &GpuRope,
        heads: usize,
        start_pos: usize,
    ) -> Result<GpuTensor> {
        // rope.wgsl reads dense rows: a column window (q or k of a packed product that training leaves without an
        // adapter) is copied first.
        rope::rope(self, &train_ops::dense(self, x)?, rope, heads, start_pos)
    }

    fn attention(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        cache: &mut GpuKvCache,
        params: &AttentionParams,
        start_pos: usize,
    ) -> Result<GpuTensor> {
        check_window_rows(q, cache)?;
        Ok(attention::attention(self, q, k, v, cache, params, start_pos, None, None)?.0)
    }

    fn attention_with_rope(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        rope: &GpuRope,
        cache: &mut GpuKvCache,
        params: &AttentionParams,
        start_pos: usize,
        next: &GpuWeight,
    ) -> Result<GpuTensor> {
        check_window_rows(q, cache)?;
        let mode = activation_rounding::mode_for(next.dtype, q.cols);
        let (out, rounded) =
            attention::attention(self, q, k, v, cache, params, start_pos, Some(rope), mode)?;
        if let (Some(mode), Some((rounded, sums))) = (mode, rounded) {
            activation_rounding::remember(&self.rounded, &out, mode, rounded, sums);
        }
        Ok(out)
    }

    fn gated_activation(
        &self,
        gate: &GpuTensor,
        up: &GpuTensor,
        act: Activation,
    ) -> Result<GpuTensor> {
        elementwise::gated(self, gate, up, act)
    }

    fn gated_activation_for(
        &self,
        gate: &GpuTensor,
        up: &GpuTensor,
        act: Activation,
        next: &GpuWeight,
    ) -> Result<GpuTensor> {
        match activation_rounding::mode_for(next.dtype, gate.cols) {
            Some(mode) => {
                let (out, rounded, sums) = elementwise::gated_round(self, gate, up, act, mode)?;
                activation_rounding::remember(&self.rounded, &out, mode, rounded, sums);
                Ok(out)
            }
            None => elementwise::gated(self, gate, up, act),
        }
    }

    fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        elementwise::add(self, a, b)
    }

    fn softcap(&self, x: &GpuTensor, cap: f32) -> Result<GpuTensor> {
        elementwise::softcap(self, x, cap)
    }

    fn split_cols(&self, x: &GpuTensor, widths: &[usize]) -> Result<Vec<GpuTensor>> {
        if widths.iter().sum::<usize>() != x.cols {
            return Err(Error::Backend(format!(
                "{} columns cannot be split into {widths:?}",
                x.cols
            )));
        }
        let mut offset = x.offset;
        Ok(widths
            .iter()
            .map(|&cols| {
                let piece = GpuTensor {
                    slab: x.slab.clone(),
                    rows: x.rows,
                    cols,
                    offset,
                    stride: x.stride,
                };
                offset += cols;
                piece
            })
            .collect())
    }

    fn last_row(&self, x: &GpuTensor) -> Result<GpuTensor> {
        if x.rows == 0 {
            return Err(Error::Backend("last row of an empty tensor".into()));
        }
        let out = self.tensor(1, x.cols);
        let bytes = (x.cols * 4) as u64;
        self.rec
            .copy(x.buf(), (x.rows - 1) as u64 * bytes, out.buf(), 0, bytes);
        Ok(out)
    }

    fn row(&self, x: &GpuTensor, i: usize) -> Result<GpuTensor> {
        if i >= x.rows {
            return Err(Error::Backend(format!(
                "row {i} of a tensor with {} rows",
                x.rows
            )));
        }
        // One row of a column window is contiguous too.
        let out = self.tensor(1, x.cols);
        let (buf, at) = x.window();
        let start = (at.offset as usize + i * x.stride) * 4;
        self.rec
            .copy(buf, start as u64, out.buf(), 0, (x.cols * 4) as u64);
        Ok(out)
    }

    fn concat_rows(&self, parts: &[GpuTensor]) -> Result<GpuTensor> {
        let cols = parts.first().map_or(0, |p| p.cols);
        if parts.is_empty() || parts.iter().any(|p| p.cols != cols) {
            return Err(Error::Backend(
                "stacking no tensors, or tensors of different widths".into(),
            ));
        }
        let out = self.tensor(parts.iter().map(|p| p.rows).sum(), cols);
        let row_bytes = (cols * 4) as u64;
        let mut at = 0u64;
        for part in parts {
            let (buf, layout) = part.window();
            if part.stride == cols {
                // Dense rows sit one after another: one copy.
                let bytes = row_bytes * part.rows as u64;
                self.rec
                    .copy(buf, layout.offset as u64 * 4, out.buf(), at, bytes);
                at += bytes;
                continue;
            }
            for r in 0..part.rows {
                let start = (layout.offset as usize + r * part.stride) as u64 * 4;
                self.rec.copy(buf, start, out.buf(), at, row_bytes);
                at += row_bytes;
            }
        }
        Ok(out)
    }

    async fn to_host(&self, x: &GpuTensor) -> Result<Vec<Vec<f32>>> {
        // A column window is read with the rows it sits in, then cut out.
        let (buf, at) = x.window();
        let span = if x.rows == 0 {
            0
        } else {
            (x.rows - 1) * x.stride + x.cols
        };
        let bytes = self
            .rec
            .read(buf, at.offset as u64 * 4, (span * 4) as u64)
            .await?;
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((0..x.rows)
            .map(|r| values[r * x.stride..r * x.stride + x.cols].to_vec())
            .collect())
    }

    async fn sampling_logits(&self, logits: &GpuTensor) -> Result<SamplingLogits> {
        let candidates = topk::top_k(self, logits, TOP_K_CANDIDATES)?;
        let bytes = self
            .rec
            .read(candidates.buf(), 0, (TOP_K_CANDIDATES * 8) as u64)
            .await?;
        Ok(SamplingLogits::Candidates(candidate_pairs(&bytes)))
    }

    async fn sampling_logits_rows(&self, logits: &GpuTensor) -> Result<Vec<SamplingLogits>> {
        // Each row's best candidates, gathered into one tensor: one readback for the whole batch.
        let per_row = (0..logits.rows)
            .map(|i| topk::top_k(self, &self.row(logits, i)?, TOP_K_CANDIDATES))
            .collect::<Result<Vec<_>>>()?;
        if per_row.is_empty() {
            return Ok(Vec::new());
        }
        let all = self.concat_rows(&per_row)?;
        let bytes = self.rec.read(all.buf(), 0, (all.len() * 4) as u64).await?;
        Ok(bytes
            .chunks_exact(TOP_K_CANDIDATES * 8)
            .map(|row| SamplingLogits::Candidates(candidate_pairs(row)))
            .collect())
    }

    fn max_rows_per_forward(&self) -> usize {
        MAX_ROWS_PER_FORWARD
    }

    fn max_tensor_bytes(&self) -> usize {
        self.rec.ctx.max_binding.min(self.rec.ctx.max_buffer) as usize
    }

    fn counters(&self) -> Counters {
        self.rec.pool.counters.get()
    }
}

/// top_k's (id, f32 bits) words as pairs, without the padding of a vocabulary smaller than k.
fn candidate_pairs(bytes: &[u8]) -> Vec<(u32, f32)> {
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    bytes
        .chunks_exact(8)
        .map(|p| (word(&p[..4]), f32::from_bits(word(&p[4..]))))
        .filter(|&(id, _)| id != u32::MAX)
        .collect()
}
