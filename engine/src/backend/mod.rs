//! The small op set the transformer is written against. Backends implement ops; they never know which model runs.
//!
//! Activations are row-major `[rows, cols]` (rows = token positions); attention inputs are `[rows, heads, head_dim]`
//! viewed from the same storage. Weights keep their file quantization.

pub mod cpu;
pub mod gpu;

use crate::config::{Activation, RopeLayout};
use crate::quant::GgmlType;
use crate::Result;
pub use gpu::Counters;

/// Per-layer attention conventions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionParams {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies q·k before the softcap.
    pub scale: f32,
    /// scores = cap * tanh(scores / cap) when set (Gemma 2).
    pub softcap: Option<f32>,
    /// Key k is visible to query q iff q - W < k <= q.
    pub window: Option<usize>,
}

/// Weights that multiply the same activations (q, k, v; gate, up), as the backend keeps them.
pub enum Projections<W> {
    /// One weight each.
    Apart(Vec<W>),
    /// Their rows one after another in one weight, for one product instead of several; `widths` are each one's rows.
    Packed { weight: W, widths: Vec<usize> },
}

impl<W> Projections<W> {
    /// The weight the activations meet first (what a producer may prepare them for).
    pub fn first(&self) -> &W {
        match self {
            Projections::Apart(ws) => &ws[0],
            Projections::Packed { weight, .. } => weight,
        }
    }
}

/// One weight as `upload_weight` takes it: name, type, shape [rows, cols] and file bytes.
pub type WeightBytes<'a> = (&'a str, GgmlType, [usize; 2], &'a [u8]);

/// Parts of one type and width as one weight: (name, type, shape, bytes, each part's rows); None when they differ
/// or there is only one.
pub(crate) struct PackedBytes {
    pub name: String,
    pub dtype: GgmlType,
    pub shape: [usize; 2],
    pub bytes: Vec<u8>,
    pub widths: Vec<usize>,
}

/// [`Backend::matmul_parts`] the plain way: the wide product, then cut.
pub(crate) fn wide_then_split<B: Backend + ?Sized>(
    b: &B,
    x: &B::Tensor,
    w: &B::Weight,
    widths: &[usize],
    independent_rows: bool,
) -> Result<Vec<B::Tensor>> {
    let y = match independent_rows {
        true => b.matmul_independent(x, w)?,
        false => b.matmul(x, w)?,
    };
    b.split_cols(&y, widths)
}

pub(crate) fn pack_bytes(parts: &[WeightBytes]) -> Option<PackedBytes> {
    let &(_, dtype, [_, cols], _) = parts.first()?;
    if parts.len() == 1 || parts.iter().any(|&(_, d, [_, c], _)| d != dtype || c != cols) {
        return None;
    }
    let widths: Vec<usize> = parts.iter().map(|p| p.2[0]).collect();
    Some(PackedBytes {
        name: parts.iter().map(|p| p.0).collect::<Vec<_>>().join(" + "),
        dtype,
        shape: [widths.iter().sum(), cols],
        bytes: parts.iter().flat_map(|p| p.3.iter().copied()).collect(),
        widths,
    })
}

/// Each part uploaded as its own weight.
pub(crate) fn upload_apart<B: Backend + ?Sized>(b: &B, parts: &[WeightBytes]) -> Result<Projections<B::Weight>> {
    let weights = parts
        .iter()
        .map(|&(name, dtype, shape, bytes)| b.upload_weight(name, dtype, shape, bytes));
    Ok(Projections::Apart(weights.collect::<Result<_>>()?))
}

/// What one layer's KV cache must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvSpec {
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Longest context the session will run.
    pub max_positions: usize,
    pub window: Option<usize>,
}

#[allow(async_fn_in_trait)] // backends run on one thread; futures need not be Send
pub trait Backend {
    /// An activation tensor living on the backend.
    type Tensor: Clone;
    /// A weight matrix in its file quantization.
    type Weight;
    /// Precomputed RoPE frequencies of one layer kind.
    type Rope;
    /// One layer's key/value cache.
    type KvCache;

    fn name(&self) -> String;

    /// A 2-D weight `[rows, cols]` from its raw file bytes (GGUF block layout, or little-endian F32/F16/BF16).
    fn upload_weight(
        &self,
        name: &str,
        dtype: GgmlType,
        shape: [usize; 2],
        bytes: &[u8],
    ) -> Result<Self::Weight>;

    /// Weights that multiply the same activations (at least one). A backend that gains from one product over several
    /// packs those of one type and width; the default keeps them apart.
    fn upload_projections(&self, parts: &[WeightBytes]) -> Result<Projections<Self::Weight>> {
        upload_apart(self, parts)
    }

    /// Fails with a clear message when weights of these types and shapes (`total` bytes) cannot live on the device.
    fn check_capacity(
        &self,
        _matrices: &[(&str, GgmlType, [usize; 2])],
        _total: u64,
    ) -> Result<()> {
        Ok(())
    }

    /// A small f32 vector (norm weights).
    fn upload_vector(&self, values: &[f32]) -> Result<Self::Tensor>;

    fn rope_table(&self, inv_freq: &[f32], layout: RopeLayout) -> Result<Self::Rope>;

    fn new_kv_cache(&self, spec: KvSpec) -> Result<Self::KvCache>;

    /// Forget everything cached (a new conversation).
    fn reset_kv_cache(&self, cache: &mut Self::KvCache) -> Result<()>;

    /// Rows of `table` for `ids`, times `scale`: `[ids.len(), cols]`.
    fn embed(&self, table: &Self::Weight, ids: &[u32], scale: Option<f32>) -> Result<Self::Tensor>;

    /// x `[rows, in]` · wᵀ (w `[out, in]`) → `[rows, out]`.
    fn matmul(&self, x: &Self::Tensor, w: &Self::Weight) -> Result<Self::Tensor>;

    /// y + scale · (x · aᵀ) · B: a LoRA term added to a product's output y `[rows, out]`, with f32 weights a `[r, in]`
    /// and `b_t` = Bᵀ `[r, out]` (transposed, so both passes read rows).
    fn add_low_rank(
        &self,
        y: &Self::Tensor,
        x: &Self::Tensor,
        a: &Self::Weight,
        b_t: &Self::Weight,
        scale: f32,
    ) -> Result<Self::Tensor>;

    /// RMSNorm over groups of `weight.len()` values (a whole row, or one head for QK-norm): y = x / rms(x) * w.
    fn rms_norm(&self, x: &Self::Tensor, weight: &Self::Tensor, eps: f32) -> Result<Self::Tensor>;

    /// (x + r, rms_norm(x + r, weight)): the residual add and the next norm, fused where the backend can.
    fn add_rms_norm(
        &self,
        x: &Self::Tensor,
        r: &Self::Tensor,
        weight: &Self::Tensor,
        eps: f32,
    ) -> Result<(Self::Tensor, Self::Tensor)> {
        let sum = self.add(x, r)?;
        let normed = self.rms_norm(&sum, weight, eps)?;
        Ok((sum, normed))
    }

    /// `add_rms_norm` of x and r normalised first by `r_norm` when given (Gemma's post-attention and post-MLP
    /// norms), whose normed rows are multiplied by `next` (and weights shaped like it) before anything else reads
    /// them: a backend may do it all in one pass and prepare the rows for that product.
    fn add_rms_norm_for(
        &self,
        x: &Self::Tensor,
        r: &Self::Tensor,
        r_norm: Option<&Self::Tensor>,
        weight: &Self::Tensor,
        eps: f32,
        next: &Self::Weight,
    ) -> Result<(Self::Tensor, Self::Tensor)> {
        let _ = next;
        match r_norm {
            Some(n) => self.add_rms_norm(x, &self.rms_norm(r, n, eps)?, weight, eps),
            None => self.add_rms_norm(x, r, weight, eps),
        }
    }

    /// Rotates `[rows, heads * head_dim]` for positions start_pos..start_pos + rows.
    fn rope(
        &self,
        x: &Self::Tensor,
        rope: &Self::Rope,
        heads: usize,
        start_pos: usize,
    ) -> Result<Self::Tensor>;

    /// Appends k, v (`[rows, n_kv * head_dim]`, positions start_pos..) to the cache, then attends q
    /// (`[rows, n_heads * head_dim]`) causally over everything cached → `[rows, n_heads * head_dim]`.
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        cache: &mut Self::KvCache,
        params: &AttentionParams,
        start_pos: usize,
    ) -> Result<Self::Tensor>;

    /// RoPE on q and k (`rope`, positions start_pos..), then `attention`, whose output is multiplied by `next`
    /// before anything else reads it: one call, so a backend can rotate and append to the cache in one pass, and
    /// prepare the output for that product in the attention's pass.
    #[allow(clippy::too_many_arguments)]
    fn attention_with_rope(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        rope: &Self::Rope,
        cache: &mut Self::KvCache,
        params: &AttentionParams,
        start_pos: usize,
        next: &Self::Weight,
    ) -> Result<Self::Tensor> {
        let _ = next;
        let q = self.rope(q, rope, params.n_heads, start_pos)?;
        let k = self.rope(k, rope, params.n_kv_heads, start_pos)?;
        self.attention(&q, &k, v, cache, params, start_pos)
    }

    /// act(gate) * up.
    fn gated_activation(
        &self,
        gate: &Self::Tensor,
        up: &Self::Tensor,
        act: Activation,
    ) -> Result<Self::Tensor>;

    /// `gated_activation` whose result is multiplied by `next` before anything else reads it: a backend may prepare
    /// it for that product in the same pass.
    fn gated_activation_for(
        &self,
        gate: &Self::Tensor,
        up: &Self::Tensor,
        act: Activation,
        next: &Self::Weight,
    ) -> Result<Self::Tensor> {
        let _ = next;
        self.gated_activation(gate, up, act)
    }

    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// cap * tanh(x / cap).
    fn softcap(&self, x: &Self::Tensor, cap: f32) -> Result<Self::Tensor>;

    /// `[rows, Σ widths]` cut into `[rows, width]` pieces, left to right (a packed product's outputs).
    fn split_cols(&self, x: &Self::Tensor, widths: &[usize]) -> Result<Vec<Self::Tensor>>;

    /// x times a packed weight, cut into its parts: `split_cols(matmul(x, w), widths)` (`independent_rows`:
    /// [`Backend::matmul_independent`]), which a backend may compute without the wide product in between.
    fn matmul_parts(
        &self,
        x: &Self::Tensor,
        w: &Self::Weight,
        widths: &[usize],
        independent_rows: bool,
    ) -> Result<Vec<Self::Tensor>> {
        wide_then_split(self, x, w, widths, independent_rows)
    }

    /// The last row of `[rows, cols]` as `[1, cols]`.
    fn last_row(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Reads `[rows, cols]` back to the host, row by row. Awaits the device (never blocks a browser thread).
    async fn to_host(&self, x: &Self::Tensor) -> Result<Vec<Vec<f32>>>;

    /// What the sampler needs of the last row of `logits`: the whole row, or (on a GPU, where reading 256k floats
    /// per token would dominate) the `TOP_K_CANDIDATES` best tokens, found on the device.
    async fn sampling_logits(&self, logits: &Self::Tensor) -> Result<SamplingLogits> {
        let mut rows = self.to_host(logits).await?;
        rows.pop()
            .map(SamplingLogits::Full)
            .ok_or_else(|| crate::Error::Backend("no logits".into()))
    }

    /// x `[rows, in]` · wᵀ where every row belongs to a different sequence (a batch of decode steps): a row's result
    /// must not depend on how many rows there are or what the others hold. Backends whose kernels pick their
    /// arithmetic by the row count (as llama.cpp's CPU kernels do) override it.
    fn matmul_independent(&self, x: &Self::Tensor, w: &Self::Weight) -> Result<Self::Tensor> {
        self.matmul(x, w)
    }

    /// Row `i` of `[rows, cols]` as a dense `[1, cols]`.
    fn row(&self, x: &Self::Tensor, i: usize) -> Result<Self::Tensor>;

    /// Tensors of equal width stacked top to bottom: `[Σ rows, cols]`.
    fn concat_rows(&self, parts: &[Self::Tensor]) -> Result<Self::Tensor>;

    /// A batched decode step's attention: row i of q, k and v is one new token of sequence i, at `positions[i]`,
    /// cached in `caches[i]`. Each row attends only over its own cache, exactly as `attention_with_rope` would for
    /// that sequence alone.
    #[allow(clippy::too_many_arguments)]
    fn attention_batch(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        rope: &Self::Rope,
        caches: &mut [&mut Self::KvCache],
        params: &AttentionParams,
        positions: &[usize],
        next: &Self::Weight,
    ) -> Result<Self::Tensor> {
        if caches.len() != positions.len() {
            return Err(crate::Error::Backend(format!(
                "a batch of {} caches at {} positions",
                caches.len(),
                positions.len()
            )));
        }
        let mut outs = Vec::with_capacity(caches.len());
        for (i, (cache, &pos)) in caches.iter_mut().zip(positions).enumerate() {
            let (qi, ki, vi) = (self.row(q, i)?, self.row(k, i)?, self.row(v, i)?);
            outs.push(self.attention_with_rope(&qi, &ki, &vi, rope, cache, params, pos, next)?);
        }
        self.concat_rows(&outs)
    }

    /// What the sampler needs of every row of `logits` (one per sequence of a batch), as `sampling_logits` gives it
    /// for one row.
    async fn sampling_logits_rows(&self, logits: &Self::Tensor) -> Result<Vec<SamplingLogits>> {
        Ok(self
            .to_host(logits)
            .await?
            .into_iter()
            .map(SamplingLogits::Full)
            .collect())
    }

    /// The most rows one op sequence may carry (a prefill longer than this runs in chunks).
    fn max_rows_per_forward(&self) -> usize {
        usize::MAX
    }

    /// The largest activation tensor the backend can hold, in bytes.
    fn max_tensor_bytes(&self) -> usize {
        usize::MAX
    }

    /// Work done on the device so far (zero where nothing is counted).
    fn counters(&self) -> Counters {
        Counters::default()
    }
}

/// How many candidates a GPU backend reads back per token (1 KB of (id, logit) pairs).
pub const TOP_K_CANDIDATES: usize = 128;

/// Logits of one position, as the backend hands them to the sampler.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplingLogits {
    Full(Vec<f32>),
    /// The best tokens with their logits, best first.
    Candidates(Vec<(u32, f32)>),
}
