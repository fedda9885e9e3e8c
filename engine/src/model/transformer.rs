//! The one transformer definition: Llama, Gemma 2 and Gemma 3 differ only in fields of `Config` and in which
//! optional weights exist. Every op goes through the `Backend`.

use crate::backend::{AttentionParams, Backend, KvSpec, Projections};
use crate::config::Config;
use crate::lora::{GroupId, LoraStack};
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
    /// The LoRA adapters every pass through this cache applies: its keys and values hold their effect, so changing
    /// them means starting the cache again ([`crate::session::Session::set_lora`] does).
    pub lora: LoraStack<B>,
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
            lora: LoraStack::default(),
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
        let pos = cache.position;
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to run".into()));
        }
        check_room(cache, tokens.len())?;
        let lora = cache.lora.clone();
        let mut x = self.blocks(b, tokens, false, &lora, |i, layer, q, k, v| {
            let p = &layer.attention;
            b.attention_with_rope(q, k, v, &self.ropes[layer.rope], &mut cache.layers[i], p, pos, &layer.o)
        })?;
        cache.position += tokens.len();
        if !all_logits {
            x = b.last_row(&x)?;
        }
        self.head(b, &x, false)
    }

    /// One decode step of a batch of independent sequences: `tokens[i]` runs at the next position of `caches[i]`.
    /// Returns logits `[batch, vocab]`. A row's arithmetic never depends on the other rows (see
    /// [`Backend::matmul_independent`]), so each sequence gets what `forward` would give it alone — bit for bit on
    /// the CPU backend.
    pub fn forward_batch(
        &self,
        b: &B,
        caches: &mut [&mut Cache<B>],
        tokens: &[u32],
    ) -> Result<B::Tensor> {
        if tokens.is_empty() || tokens.len() != caches.len() {
            return Err(Error::InvalidArgument(format!(
                "a batch of {} tokens for {} sequences",
                tokens.len(),
                caches.len()
            )));
        }
        for cache in caches.iter() {
            check_room(cache, 1)?;
        }
        let lora = caches[0].lora.clone();
        if caches.iter().any(|c| c.lora.key() != lora.key()) {
            return Err(Error::InvalidArgument(
                "a batch whose sequences run under different LoRA adapters".into(),
            ));
        }
        let positions: Vec<usize> = caches.iter().map(|c| c.position).collect();
        let x = self.blocks(b, tokens, true, &lora, |i, layer, q, k, v| {
            let mut kvs: Vec<&mut B::KvCache> =
                caches.iter_mut().map(|c| &mut c.layers[i]).collect();
            let p = &layer.attention;
            b.attention_batch(q, k, v, &self.ropes[layer.rope], &mut kvs, p, &positions, &layer.o)
        })?;
        for cache in caches.iter_mut() {
            cache.position += 1;
        }
        self.head(b, &x, true)
    }

    /// The embedding and every block; `attend(layer index, layer, q, k, v)` is the attention (which owns the caches
    /// and positions). Every projection is decorated by the active LoRA adapters. Returns the residual stream.
    fn blocks(
        &self,
        b: &B,
        tokens: &[u32],
        independent_rows: bool,
        lora: &LoraStack<B>,
        mut attend: impl FnMut(usize, &Layer<B>, &B::Tensor, &B::Tensor, &B::Tensor) -> Result<B::Tensor>,
    ) -> Result<B::Tensor> {
        let cfg = &self.config;
        let eps = cfg.rms_norm_eps as f32;
        let matmul = |x: &B::Tensor, w: &B::Weight| match independent_rows {
            true => b.matmul_independent(x, w),
            false => b.matmul(x, w),
        };
        // Gemma scales embeddings by sqrt(hidden).
        let mut x = b.embed(&self.embed, tokens, cfg.embedding_scale)?;
        // `h` is the normed input of the next block; residual adds are fused with the norm that follows them.
        let mut h = match self.layers.first() {
            Some(first) => b.rms_norm(&x, &first.attn_norm, eps)?,
            None => x.clone(),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            // y = W·x + Σ s·B(A·x) over the active adapters (nothing when none is).
            let decorate = |group, part, x: &B::Tensor, y| match lora.is_empty() {
                true => Ok(y),
                false => lora.decorate(b, i, group, part, x, y),
            };
            let [mut q, mut k, v] =
                project(b, &h, &layer.qkv, independent_rows, !lora.is_empty(), |part, y| {
                    decorate(GroupId::Qkv, part, &h, y)
                })?;
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                q = b.rms_norm(&q, qn, eps)?;
                k = b.rms_norm(&k, kn, eps)?;
            }
            let a = attend(i, layer, &q, &k, &v)?;
            let o = decorate(GroupId::O, Some(0), &a, matmul(&a, &layer.o)?)?;
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
            let [gate, up] = project(
                b,
                &normed,
                &layer.gate_up,
                independent_rows,
                !lora.is_empty(),
                |part, y| decorate(GroupId::GateUp, part, &normed, y),
            )?;
            let act = b.gated_activation_for(&gate, &up, cfg.hidden_act, &layer.down)?;
            let m = decorate(GroupId::Down, Some(0), &act, matmul(&act, &layer.down)?)?;
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
        Ok(x)
    }

    /// Final norm, LM head and (Gemma 2) the logit softcap.
    fn head(&self, b: &B, x: &B::Tensor, independent_rows: bool) -> Result<B::Tensor> {
        let cfg = &self.config;
        let x = b.rms_norm(x, &self.final_norm, cfg.rms_norm_eps as f32)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let logits = match independent_rows {
            true => b.matmul_independent(&x, head)?,
            false => b.matmul(&x, head)?,
        };
        match cfg.final_logit_softcapping {
            Some(cap) => b.softcap(&logits, cap as f32),
            None => Ok(logits),
        }
    }
}

fn check_room<B: Backend>(cache: &Cache<B>, tokens: usize) -> Result<()> {
    if cache.position + tokens > cache.max_positions {
        return Err(Error::InvalidArgument(format!(
            "the context is full: {} + {tokens} tokens exceed the {} positions this session holds",
            cache.position, cache.max_positions
        )));
    }
    Ok(())
}

/// x times each projection: one product per weight, or one over a packed weight cut into its parts. `decorate(part,
/// y)` adds the adapters' terms to weight `part`'s output, or (`None`) to the whole packed product before the cut;
/// `decorated` says whether any adapter is active (if not, the backend cuts the packed product as it computes it).
fn project<B: Backend, const N: usize>(
    b: &B,
    x: &B::Tensor,
    p: &Projections<B::Weight>,
    independent_rows: bool,
    decorated: bool,
    decorate: impl Fn(Option<usize>, B::Tensor) -> Result<B::Tensor>,
) -> Result<[B::Tensor; N]> {
    let matmul = |x: &B::Tensor, w: &B::Weight| match independent_rows {
        true => b.matmul_independent(x, w),
        false => b.matmul(x, w),
    };
    let outputs = match p {
        Projections::Apart(ws) => ws
            .iter()
            .enumerate()
            .map(|(j, w)| decorate(Some(j), matmul(x, w)?))
            .collect::<Result<Vec<_>>>()?,
        Projections::Packed { weight, widths } if !decorated => {
            b.matmul_parts(x, weight, widths, independent_rows)?
        }
        Projections::Packed { weight, widths } => {
            b.split_cols(&decorate(None, matmul(x, weight)?)?, widths)?
        }
    };
    let n = outputs.len();
    outputs
        .try_into()
        .map_err(|_| Error::Backend(format!("{n} projections where the layer needs {N}")))
}
