//! The ops training adds to a backend: forward ops in plain f32 (inference's ops may round as llama.cpp does, which a
//! gradient must not follow), each op's backward, and small dense products for the LoRA matrices. Shapes are
//! row-major `[rows, cols]`, rows being one sequence's positions 0..rows; attention inputs are `[rows, heads ×
//! head_dim]` as in inference.

use crate::backend::{AttentionParams, Backend};
use crate::config::Activation;
use crate::Result;

#[allow(async_fn_in_trait)] // backends run on one thread; futures need not be Send
pub trait TrainBackend: Backend {
    /// An f32 `[rows, cols]` tensor of host values (LoRA matrices in, per-row loss weights).
    fn tensor(&self, rows: usize, cols: usize, values: &[f32]) -> Result<Self::Tensor>;

    /// A tensor's values, row-major.
    async fn read(&self, x: &Self::Tensor) -> Result<Vec<f32>>;

    /// Several tensors' values at once (backends that pay per readback override it to read them together).
    async fn read_all(&self, xs: &[&Self::Tensor]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(xs.len());
        for x in xs {
            out.push(self.read(x).await?);
        }
        Ok(out)
    }

    /// x `[rows, in]` · wᵀ with w `[out, in]` dequantised inside the product and x kept in f32 (no activation
    /// rounding, unlike inference's products on quantized weights).
    fn matmul_f32(&self, x: &Self::Tensor, w: &Self::Weight) -> Result<Self::Tensor>;

    /// dy `[rows, out]` · w `[out, in]` → `[rows, in]`: the gradient of a product's input through a frozen weight,
    /// dequantised inside the product (no dequantised copy of the weight is kept).
    fn matmul_grad_x(&self, dy: &Self::Tensor, w: &Self::Weight) -> Result<Self::Tensor>;

    /// op(a) · op(b), op transposing when asked: the LoRA products on small f32 tensors.
    fn mm(&self, a: &Self::Tensor, b: &Self::Tensor, a_t: bool, b_t: bool) -> Result<Self::Tensor>;

    /// a + s·b.
    fn add_scaled(&self, a: &Self::Tensor, b: &Self::Tensor, s: f32) -> Result<Self::Tensor>;

    /// Rows `start..start + n` of x, dense (one sequence of a stacked batch).
    fn rows(&self, x: &Self::Tensor, start: usize, n: usize) -> Result<Self::Tensor>;

    /// `[rows, Σ widths]` from `[rows, width]` pieces, left to right (the inverse of `split_cols`).
    fn concat_cols(&self, parts: &[Self::Tensor]) -> Result<Self::Tensor>;

    /// act(gate) · up in f32 (GELU with tanh, or SiLU).
    fn gated_f32(&self, gate: &Self::Tensor, up: &Self::Tensor, act: Activation) -> Result<Self::Tensor>;

    /// (d gate, d up) of `gated_f32` given d out.
    fn gated_backward(
        &self,
        gate: &Self::Tensor,
        up: &Self::Tensor,
        dy: &Self::Tensor,
        act: Activation,
    ) -> Result<(Self::Tensor, Self::Tensor)>;

    /// dx of `rms_norm(x, weight, eps)` given dy (groups of `weight.len()` values, as the forward).
    fn rms_norm_backward(&self, x: &Self::Tensor, weight: &Self::Tensor, dy: &Self::Tensor, eps: f32)
        -> Result<Self::Tensor>;

    /// dx of `rope(x, rope, heads, 0)` given dy: the rotation's transpose.
    fn rope_backward(&self, dy: &Self::Tensor, rope: &Self::Rope, heads: usize) -> Result<Self::Tensor>;

    /// Causal self-attention of one sequence (positions 0..rows; GQA, window, query scale and softcap as in
    /// inference) → (out `[rows, n_heads × head_dim]`, the log-sum-exp of each row's scores `[rows, n_heads]`,
    /// which is all the backward pass needs to rebuild the probabilities).
    fn attention_f32(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        p: &AttentionParams,
    ) -> Result<(Self::Tensor, Self::Tensor)>;

    /// (dq, dk, dv) of `attention_f32` given d out.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        out: &Self::Tensor,
        lse: &Self::Tensor,
        dout: &Self::Tensor,
        p: &AttentionParams,
    ) -> Result<(Self::Tensor, Self::Tensor, Self::Tensor)>;

    /// dx of `softcap(x, cap)` given its output y and dy: dy · (1 − (y / cap)²).
    fn softcap_backward(&self, y: &Self::Tensor, dy: &Self::Tensor, cap: f32) -> Result<Self::Tensor>;

    /// Cross-entropy of each row of `logits` against `targets` (None: the row is not scored), each scored row's loss
    /// multiplied by `weight`: (the weighted sum `[1, 1]`, its gradient with respect to the logits).
    fn cross_entropy(
        &self,
        logits: &Self::Tensor,
        targets: &[Option<u32>],
        weight: f32,
    ) -> Result<(Self::Tensor, Self::Tensor)>;
}
