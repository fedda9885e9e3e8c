//! The one transformer definition: Llama, Gemma 2 and Gemma 3 differ only in fields of `Config` and in which
//! optional weights exist. Every op goes through the `Backend`.

use crate::backend::{AttentionParams, Backend, KvSpec, Projections};
use crate::config::Config;
use crate::{Error, Result};

pub struct Layer<B: Backend> {
    pub attn_norm: B::Tensor,
    /// q, k and v, packed into one weight where the backend multiplies them in one product.
    pub qkv: Projections<B::Weight>,
    pub o: B::Weight,
    /// Gemma 3 normalises each query/key head before RoPE.
    pub q_norm: Option<B::Tensor>,
    pub k_norm: Option<B::Tensor>,
    /// Gemma's extra norms on the attention and MLP outputs.
    pub post_attn_norm: Option<B::Tensor>,
    pub ffn_norm: B::Tensor,
    pub post_ffn_norm: Option<B::Tensor>,
    /// gate and up, likewise.
    pub gate_up: Projections<B::Weight>,
    pub down: B::Weight,
    pub attention: AttentionParams,
    /// Index into `Transformer::ropes` (layers share tables by base).
    pub rope: usize,
}

pub struct Transformer<B: Backend> {
    pub config: Config,
    pub embed: B::Weight,
    pub layers: Vec<Layer<B>>,
    pub final_norm: B::Tensor,
    /// None when the head is tied to the embedding.
    pub lm_head: Option<B::Weight>,
    pub ropes: Vec<B::Rope>,
}

/// The per-layer caches of one conversation.
pub struct Cache<B: Backend> {
    pub layers: Vec<B::KvCache>,
    /// Positions already processed.
    pub position: usize,
    pub max_positions: usize,
}

impl<B: Backend> Transformer<B> {
    pub fn new_cache(&self, backend: &B, max_positions: usize) -> Result<Cache<B>> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                backend.new_kv_cache(KvSpec {
                    n_kv_heads: l.attention.n_kv_heads,
                    head_dim: l.attention.head_dim,
                    max_positions,
                    window: l.attention.window,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Cache {
            layers,
            position: 0,
            max_positions,
        })
    }

    /// The most positions one `forward` may run (sliding-window caches hold the window plus one such chunk).
    pub fn max_rows_per_forward(&self, backend: &B) -> usize {
        let c = &self.config;
        let widest = c
            .vocab_size
            .max(c.intermediate_size)
            .max(c.num_attention_heads * c.head_dim)
            .max(1);
        backend
            .max_rows_per_forward()
            .min(backend.max_tensor_bytes() / (4 * widest))
            .max(1)
    }

    /// Runs `tokens` at the cache's next positions; returns logits `[tokens, vocab]`, or `[1, vocab]` for the last
    /// token only when `all_logits` is false (generation needs just that one).
    pub fn forward(
        &self,
        b: &B,
        cache: &mut Cache<B>,
        tokens: &[u32],
        all_logits: bool,
    ) -> Result<B::Tensor> {
        let cfg = &self.config;
        let eps = cfg.rms_norm_eps as f32;
        let pos = cache.position;
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to run".into()));
        }
        if pos + tokens.len() > cache.max_positions {
            return Err(Error::InvalidArgument(format!(
                "the context is full: {} + {} tokens exceed the {} positions this session holds",
                pos,
                tokens.len(),
                cache.max_positions
            )));
        }
        // Gemma scales embeddings by sqrt(hidden).
        let mut x = b.embed(&self.embed, tokens, cfg.embedding_scale)?;
        // `h` is the normed input of the next block; residual adds are fused with the norm that follows them.
        let mut h = match self.layers.first() {
            Some(first) => b.rms_norm(&x, &first.attn_norm, eps)?,
            None => x.clone(),
        };
        for (i, (layer, kv)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            let p = &layer.attention;
            let [mut q, mut k, v] = project(b, &h, &layer.qkv)?;
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                q = b.rms_norm(&q, qn, eps)?;
                k = b.rms_norm(&k, kn, eps)?;
            }
            let a =
                b.attention_with_rope(&q, &k, &v, &self.ropes[layer.rope], kv, p, pos, &layer.o)?;
            let o = b.matmul(&a, &layer.o)?;
            // Gemma normalises the attention output before the residual add (post_attn_norm).
            let (sum, normed) = b.add_rms_norm_for(
                &x,
                &o,
                layer.post_attn_norm.as_ref(),
                &layer.ffn_norm,
                eps,
                layer.gate_up.first(),
            )?;
            x = sum;
            let [gate, up] = project(b, &normed, &layer.gate_up)?;
            let m = b.matmul(
                &b.gated_activation_for(&gate, &up, cfg.hidden_act, &layer.down)?,
                &layer.down,
            )?;
            // Gemma normalises the MLP output before the residual add (post_ffn_norm).
            let post = layer.post_ffn_norm.as_ref();
            match self.layers.get(i + 1) {
                Some(next) => {
                    (x, h) =
                        b.add_rms_norm_for(&x, &m, post, &next.attn_norm, eps, next.qkv.first())?
                }
                None => {
                    let m = match post {
                        Some(n) => b.rms_norm(&m, n, eps)?,
                        None => m,
                    };
                    x = b.add(&x, &m)?
                }
            }
        }
        cache.position += tokens.len();
        if !all_logits {
            x = b.last_row(&x)?;
        }
        let x = b.rms_norm(&x, &self.final_norm, eps)?;
        let logits = b.matmul(&x, self.lm_head.as_ref().unwrap_or(&self.embed))?;
        match cfg.final_logit_softcapping {
            Some(cap) => b.softcap(&logits, cap as f32),
            None => Ok(logits),
        }
    }
}

/// x times each projection: one product per weight, or one over a packed weight cut into its parts.
fn project<B: Backend, const N: usize>(
    b: &B,
    x: &B::Tensor,
    p: &Projections<B::Weight>,
) -> Result<[B::Tensor; N]> {
    let outputs = match p {
        Projections::Apart(ws) => ws
            .iter()
            .map(|w| b.matmul(x, w))
            .collect::<Result<Vec<_>>>()?,
        Projections::Packed { weight, widths } => b.split_cols(&b.matmul(x, weight)?, widths)?,
    };
    let n = outputs.len();
    outputs
        .try_into()
        .map_err(|_| Error::Backend(format!("{n} projections where the layer needs {N}")))
}
