//! One training pass over a batch: the forward pass of [`crate::model::Transformer`] in f32, keeping what the
//! backward pass needs, the loss, and the backward pass down to the gradients of the LoRA matrices — the base stays
//! frozen in its file's quantization. A batch's sequences are stacked row after row without padding: every op that
//! treats rows alone runs once over the stack, RoPE and attention run per sequence (positions from 0, so no padding
//! mask is needed: ch. 7's padding follows the real tokens, and causal attention never lets a real token see it).
//! The batch's loss is the mean over every scored target of every sequence, so each target weighs 1 / (scored
//! targets in the batch). Gradients are summed on the device and read back once per batch.

use super::backend::TrainBackend;
use super::lora::{DeviceLora, Grads};
use crate::backend::Projections;
use crate::lora::Target;
use crate::model::{Layer, Transformer};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// One sequence of a batch: the model's inputs and, per position, the token it should predict next (None: not
/// scored — padding after the first end token, or a masked instruction).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub inputs: Vec<u32>,
    pub targets: Vec<Option<u32>>,
}

/// A batch's mean loss and the gradients of every LoRA matrix.
pub struct Outcome {
    pub loss: f32,
    /// Targets scored.
    pub tokens: usize,
    pub grads: Grads,
}

/// What one layer's forward kept for its backward.
struct LayerTape<T> {
    x_in: T,
    h: T,
    /// Each decorated projection's x · Aᵀ.
    u: BTreeMap<Target, T>,
    /// q and k before QK-norm (Gemma 3).
    qk_pre: Option<(T, T)>,
    q: T,
    k: T,
    v: T,
    att: T,
    lse: T,
    o: T,
    x_mid: T,
    h2: T,
    gate: T,
    up: T,
    act: T,
    m: T,
}

/// Sequences stacked row after row: the ops that treat each row alone (products, norms, activations, the loss) run
/// once over the whole stack, so the products see matrices of many rows; RoPE and attention, which see a sequence's
/// positions, run on each sequence's rows.
struct Stack {
    lens: Vec<usize>,
}

impl Stack {
    fn new(batch: &[Example]) -> Result<Self> {
        for ex in batch {
            if ex.inputs.is_empty() || ex.inputs.len() != ex.targets.len() {
                return Err(Error::InvalidArgument(format!(
                    "an example of {} inputs and {} targets",
                    ex.inputs.len(),
                    ex.targets.len()
                )));
            }
        }
        Ok(Self { lens: batch.iter().map(|e| e.inputs.len()).collect() })
    }

    /// `f` on each sequence's rows of `inputs`, its outputs stacked again.
    fn per_sequence<B: TrainBackend, const N: usize, const M: usize>(
        &self,
        b: &B,
        inputs: [&B::Tensor; N],
        mut f: impl FnMut([B::Tensor; N]) -> Result<[B::Tensor; M]>,
    ) -> Result<[B::Tensor; M]> {
        if self.lens.len() == 1 {
            return f(inputs.map(|t| t.clone()));
        }
        let mut outs: [Vec<B::Tensor>; M] = std::array::from_fn(|_| Vec::with_capacity(self.lens.len()));
        let mut start = 0;
        for &n in &self.lens {
            let mut parts = Vec::with_capacity(N);
            for t in inputs {
                parts.push(b.rows(t, start, n)?);
            }
            let parts: [B::Tensor; N] = parts.try_into().map_err(|_| Error::Backend("sequence slices".into()))?;
            for (acc, out) in outs.iter_mut().zip(f(parts)?) {
                acc.push(out);
            }
            start += n;
        }
        let stacked = outs.iter().map(|parts| b.concat_rows(parts)).collect::<Result<Vec<_>>>()?;
        stacked.try_into().map_err(|_| Error::Backend("stacked outputs".into()))
    }

    /// Consecutive sequences grouped so that a group's logits stay under `max_bytes` (a sequence longer than that
    /// forms a group alone): (first row, rows) of each group.
    fn groups(&self, row_bytes: usize, max_bytes: usize) -> Vec<(usize, usize)> {
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut start = 0;
        for &n in &self.lens {
            match groups.last_mut() {
                Some(g) if (g.1 + n) * row_bytes <= max_bytes => g.1 += n,
                _ => groups.push((start, n)),
            }
            start += n;
        }
        groups
    }
}

/// The most bytes of logits one group of sequences computes at once (the head's output is the widest tensor).
const LOGITS_BYTES: usize = 64 << 20;

/// The loss of `batch` and the gradients of `lora`'s matrices: the mean over every scored target of every sequence.
/// `together` sequences are stacked at a time (memory grows with it; the result does not, beyond rounding), and
/// every layer's tape is kept.
pub async fn loss_and_grads<B: TrainBackend>(
    b: &B,
    model: &Transformer<B>,
    lora: &DeviceLora<B>,
    batch: &[Example],
    together: usize,
) -> Result<Outcome> {
    loss_and_grads_within(b, model, lora, batch, together, usize::MAX).await
}

/// [`loss_and_grads`] keeping a stack's whole tape only while it fits in `tape_budget` bytes; above that each layer's
/// forward runs again in the backward pass (the same numbers, bit for bit).
pub async fn loss_and_grads_within<B: TrainBackend>(
    b: &B,
    model: &Transformer<B>,
    lora: &DeviceLora<B>,
    batch: &[Example],
    together: usize,
    tape_budget: usize,
) -> Result<Outcome> {
    let tokens = scored(batch, "learn")?;
    let weight = 1.0 / tokens as f32;
    let mut sums = GradSums::default();
    let mut loss = None;
    for chunk in batch.chunks(together.max(1)) {
        let part = stack_pass(b, model, lora, chunk, weight, Some(&mut sums), tape_budget)?;
        loss = Some(sum_losses(b, loss, part)?);
    }
    let loss = read_loss(b, loss).await?;
    let grads = sums.read(b, lora).await?;
    Ok(Outcome { loss, tokens, grads })
}

/// The batch's mean loss alone (validation): the forward pass, no backward.
pub async fn loss<B: TrainBackend>(
    b: &B,
    model: &Transformer<B>,
    lora: &DeviceLora<B>,
    batch: &[Example],
    together: usize,
) -> Result<f32> {
    let weight = 1.0 / scored(batch, "score")? as f32;
    let mut loss = None;
    for chunk in batch.chunks(together.max(1)) {
        let part = stack_pass(b, model, lora, chunk, weight, None, 0)?;
        loss = Some(sum_losses(b, loss, part)?);
    }
    read_loss(b, loss).await
}

/// `so_far + part` (the loss tensors `[1, 1]` of a batch's stacks or groups, summed on the device).
fn sum_losses<B: TrainBackend>(b: &B, so_far: Option<B::Tensor>, part: B::Tensor) -> Result<B::Tensor> {
    match so_far {
        Some(l) => b.add(&l, &part),
        None => Ok(part),
    }
}

fn scored(batch: &[Example], what: &str) -> Result<usize> {
    let tokens: usize = batch.iter().map(|e| e.targets.iter().filter(|t| t.is_some()).count()).sum();
    if tokens == 0 {
        return Err(Error::InvalidArgument(format!("the batch has no target to {what} (every position is masked)")));
    }
    Ok(tokens)
}

async fn read_loss<B: TrainBackend>(b: &B, loss: Option<B::Tensor>) -> Result<f32> {
    match loss {
        Some(l) => Ok(b.read(&l).await?.first().copied().unwrap_or(f32::NAN)),
        None => Err(Error::InvalidArgument("an empty batch".into())),
    }
}

/// Each module's dA and dB summed on the device over a step's stacks (without the module's scale), read back once.
struct GradSums<T> {
    modules: BTreeMap<(usize, Target), (T, T)>,
}

impl<T> Default for GradSums<T> {
    fn default() -> Self {
        Self { modules: BTreeMap::new() }
    }
}

impl<T: Clone> GradSums<T> {
    fn add<B: TrainBackend<Tensor = T>>(&mut self, b: &B, layer: usize, target: Target, da: T, db: T) -> Result<()> {
        let sum = match self.modules.remove(&(layer, target)) {
            Some((sa, sb)) => (b.add(&sa, &da)?, b.add(&sb, &db)?),
            None => (da, db),
        };
        self.modules.insert((layer, target), sum);
        Ok(())
    }

    async fn read<B: TrainBackend<Tensor = T>>(&self, b: &B, lora: &DeviceLora<B>) -> Result<Grads> {
        let mut grads = Grads::zeros_like(lora);
        let tensors: Vec<&T> = self.modules.values().flat_map(|(a, g)| [a, g]).collect();
        let values = b.read_all(&tensors).await?;
        for (((layer, target), _), pair) in self.modules.iter().zip(values.chunks_exact(2)) {
            let scale = lora.module(*layer, *target).map_or(1.0, |m| m.scale);
            grads.add(*layer, *target, &pair[0], &pair[1], scale)?;
        }
        Ok(grads)
    }
}

/// What the forward pass keeps of each layer for the backward pass.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Every layer's whole tape.
    All,
    /// Only each layer's input; the backward pass runs the layer's forward again (same ops, same bits) to rebuild
    /// its tape, which bounds memory to one layer's tape at about a third more arithmetic.
    Inputs,
    /// Nothing (a loss without gradients).
    Nothing,
}

/// One layer's part of the tape: whole, or its input alone.
enum Kept<T> {
    Whole(LayerTape<T>),
    Input(T),
}

/// What the forward pass of a stack kept, and the last block's output.
struct Forward<T> {
    tape: Vec<Kept<T>>,
    x_final: T,
}

/// Bytes one row of one layer's whole tape holds: the block's hidden-wide tensors, q/k/v and attention (and q, k
/// before QK-norm), the MLP's three wide tensors.
fn tape_row_bytes(cfg: &crate::config::Config) -> usize {
    let (q, kv) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    4 * (7 * cfg.hidden_size + 3 * q + 3 * kv + 3 * cfg.intermediate_size + cfg.num_attention_heads)
}

/// Embedding and every block, keeping what `keep` says.
fn forward<B: TrainBackend>(
    b: &B,
    model: &Transformer<B>,
    lora: &DeviceLora<B>,
    stack: &Stack,
    inputs: &[u32],
    keep: Keep,
) -> Result<Forward<B::Tensor>> {
    let cfg = &model.config;
    let eps = cfg.rms_norm_eps as f32;
    let mut x = b.embed(&model.embed, inputs, cfg.embedding_scale)?;
    let mut tape = Vec::with_capacity(model.layers.len());
    for (i, layer) in model.layers.iter().enumerate() {
        let t = layer_forward(b, model, layer, i, lora, stack, x)?;
        x = b.add(&t.x_mid, &post_norm(b, layer.post_ffn_norm.as_ref(), &t.m, eps)?)?;
        match keep {
            Keep::All => tape.push(Kept::Whole(t)),
            Keep::Inputs => tape.push(Kept::Input(t.x_in)),
            Keep::Nothing => {}
        }
    }
    Ok(Forward { tape, x_final: x })
}

/// The head and the final softcap over rows of the final norm's output.
fn head_logits<B: TrainBackend>(b: &B, model: &Transformer<B>, xf: &B::Tensor) -> Result<B::Tensor> {
    let head = model.lm_head.as_ref().unwrap_or(&model.embed);
    let logits = b.matmul_f32(xf, head)?;
    match model.config.final_logit_softcapping {
        Some(cap) => b.softcap(&logits, cap as f32),
        None => Ok(logits),
    }
}

/// The logits `[inputs, vocab]` training computes for `inputs` under `lora` (what an exported adapter must give).
pub async fn logits<B: TrainBackend>(
    b: &B,
    model: &Transformer<B>,
    lora: &DeviceLora<B>,
    inputs: &[u32],
) -> Result<Vec<f32>> {
    if inputs.is_empty() {
        return Err(Error::InvalidArgument("no tokens to run".into()));
    }
    let stack = Stack { lens: vec![inputs.len()] };
    let Forward { x_final, .. } = forward(b, model, lora, &stack, inputs, Keep::Nothing)?;
    let xf = b.rms_norm(&x_final, &model.final_norm, model.config.rms_norm_eps as f32)?;
    b.read(&head_logits(b, model, &xf)?).await
}

/// Forward and (with `grads`) backward of a stack of sequences, adding their gradients to `grads`; returns their
/// share of the loss `[1, 1]`, each scored target weighing `weight`.
fn stack_pass<B: TrainBackend>(
    b: &B,
    model: &Transformer<B>,
    lora: &DeviceLora<B>,
    batch: &[Example],
    weight: f32,
    grads: Option<&mut GradSums<B::Tensor>>,
    tape_budget: usize,
) -> Result<B::Tensor> {
    let stack = Stack::new(batch)?;
    let inputs: Vec<u32> = batch.iter().flat_map(|e| e.inputs.iter().copied()).collect();
    let targets: Vec<Option<u32>> = batch.iter().flat_map(|e| e.targets.iter().copied()).collect();
    let cfg = &model.config;
    let eps = cfg.rms_norm_eps as f32;
    let keep = match &grads {
        None => Keep::Nothing,
        Some(_) if inputs.len() * model.layers.len() * tape_row_bytes(cfg) <= tape_budget => Keep::All,
        Some(_) => Keep::Inputs,
    };
    let Forward { tape, x_final } = forward(b, model, lora, &stack, &inputs, keep)?;
    let xf = b.rms_norm(&x_final, &model.final_norm, eps)?;

    // The head, the loss and their backward, a group of sequences at a time (the logits are the widest tensor).
    let head = model.lm_head.as_ref().unwrap_or(&model.embed);
    let row_bytes = 4 * cfg.vocab_size;
    let mut loss: Option<B::Tensor> = None;
    let mut dxf_parts = Vec::new();
    let groups = stack.groups(row_bytes, LOGITS_BYTES.min(b.max_tensor_bytes()));
    for &(start, rows) in &groups {
        let xg = if groups.len() == 1 { xf.clone() } else { b.rows(&xf, start, rows)? };
        let logits = head_logits(b, model, &xg)?;
        let (part, mut dlogits) = b.cross_entropy(&logits, &targets[start..start + rows], weight)?;
        loss = Some(sum_losses(b, loss, part)?);
        if grads.is_some() {
            if let Some(cap) = cfg.final_logit_softcapping {
                dlogits = b.softcap_backward(&logits, &dlogits, cap as f32)?;
            }
            dxf_parts.push(b.matmul_grad_x(&dlogits, head)?);
        }
    }
    let loss = loss.ok_or_else(|| Error::InvalidArgument("an empty batch".into()))?;
    let Some(grads) = grads else { return Ok(loss) };

    // Backward, top to bottom.
    let dxf = if dxf_parts.len() == 1 { dxf_parts.pop().expect("one part") } else { b.concat_rows(&dxf_parts)? };
    let mut dx = b.rms_norm_backward(&x_final, &model.final_norm, &dxf, eps)?;
    for (i, (layer, kept)) in model.layers.iter().zip(&tape).enumerate().rev() {
        let rebuilt;
        let t = match kept {
            Kept::Whole(t) => t,
            Kept::Input(x_in) => {
                rebuilt = layer_forward(b, model, layer, i, lora, &stack, x_in.clone())?;
                &rebuilt
            }
        };
        dx = layer_backward(b, model, layer, i, lora, &stack, t, dx, grads)?;
    }
    Ok(loss)
}

/// Gemma's norm of a sub-block's output before the residual add; the output itself elsewhere.
fn post_norm<B: TrainBackend>(b: &B, norm: Option<&B::Tensor>, y: &B::Tensor, eps: f32) -> Result<B::Tensor> {
    match norm {
        Some(n) => b.rms_norm(y, n, eps),
        None => Ok(y.clone()),
    }
}

fn post_norm_backward<B: TrainBackend>(
    b: &B,
    norm: Option<&B::Tensor>,
    y: &B::Tensor,
    dy: B::Tensor,
    eps: f32,
) -> Result<B::Tensor> {
    match norm {
        Some(n) => b.rms_norm_backward(y, n, &dy, eps),
        None => Ok(dy),
    }
}

fn layer_forward<B: TrainBackend>(
    b: &B,
    model: &Transformer<B>,
    layer: &Layer<B>,
    i: usize,
    lora: &DeviceLora<B>,
    stack: &Stack,
    x_in: B::Tensor,
) -> Result<LayerTape<B::Tensor>> {
    let cfg = &model.config;
    let eps = cfg.rms_norm_eps as f32;
    let p = &layer.attention;
    let rope = &model.ropes[layer.rope];
    let mut u = BTreeMap::new();

    let h = b.rms_norm(&x_in, &layer.attn_norm, eps)?;
    let [q, k, v] = project(b, &h, &layer.qkv, [Target::Q, Target::K, Target::V], i, lora, &mut u)?;
    let (qk_pre, q, k) = match (&layer.q_norm, &layer.k_norm) {
        (Some(qn), Some(kn)) => {
            let (qn_out, kn_out) = (b.rms_norm(&q, qn, eps)?, b.rms_norm(&k, kn, eps)?);
            (Some((q, k)), qn_out, kn_out)
        }
        _ => (None, q, k),
    };
    let [q, k] = stack.per_sequence(b, [&q, &k], |[q, k]| {
        Ok([b.rope(&q, rope, p.n_heads, 0)?, b.rope(&k, rope, p.n_kv_heads, 0)?])
    })?;
    let [att, lse] = stack.per_sequence(b, [&q, &k, &v], |[q, k, v]| {
        let (att, lse) = b.attention_f32(&q, &k, &v, p)?;
        Ok([att, lse])
    })?;
    let o = lora_product(b, &att, &layer.o, i, Target::O, lora, &mut u)?;
    let x_mid = b.add(&x_in, &post_norm(b, layer.post_attn_norm.as_ref(), &o, eps)?)?;
    let h2 = b.rms_norm(&x_mid, &layer.ffn_norm, eps)?;
    let [gate, up] = project(b, &h2, &layer.gate_up, [Target::Gate, Target::Up], i, lora, &mut u)?;
    let act = b.gated_f32(&gate, &up, cfg.hidden_act)?;
    let m = lora_product(b, &act, &layer.down, i, Target::Down, lora, &mut u)?;
    Ok(LayerTape { x_in, h, u, qk_pre, q, k, v, att, lse, o, x_mid, h2, gate, up, act, m })
}

/// x · Wᵀ plus the LoRA term of (layer, target), keeping x · Aᵀ on the tape.
fn lora_product<B: TrainBackend>(
    b: &B,
    x: &B::Tensor,
    w: &B::Weight,
    layer: usize,
    target: Target,
    lora: &DeviceLora<B>,
    u: &mut BTreeMap<Target, B::Tensor>,
) -> Result<B::Tensor> {
    let y = b.matmul_f32(x, w)?;
    decorate(b, x, y, layer, target, lora, u)
}

fn decorate<B: TrainBackend>(
    b: &B,
    x: &B::Tensor,
    y: B::Tensor,
    layer: usize,
    target: Target,
    lora: &DeviceLora<B>,
    u: &mut BTreeMap<Target, B::Tensor>,
) -> Result<B::Tensor> {
    match lora.module(layer, target) {
        Some(m) => {
            let xa = b.mm(x, &m.a, false, true)?;
            let y = b.add_scaled(&y, &b.mm(&xa, &m.b, false, true)?, m.scale)?;
            u.insert(target, xa);
            Ok(y)
        }
        None => Ok(y),
    }
}

/// x times each projection of a group (apart, or packed and cut), each decorated by its LoRA term.
fn project<B: TrainBackend, const N: usize>(
    b: &B,
    x: &B::Tensor,
    p: &Projections<B::Weight>,
    targets: [Target; N],
    layer: usize,
    lora: &DeviceLora<B>,
    u: &mut BTreeMap<Target, B::Tensor>,
) -> Result<[B::Tensor; N]> {
    let plain = match p {
        Projections::Apart(ws) if ws.len() == N => ws.iter().map(|w| b.matmul_f32(x, w)).collect::<Result<Vec<_>>>()?,
        Projections::Packed { weight, widths } if widths.len() == N => b.split_cols(&b.matmul_f32(x, weight)?, widths)?,
        _ => return Err(Error::Backend(format!("a layer's projections are not the {N} this pass expects"))),
    };
    let decorated = plain
        .into_iter()
        .zip(targets)
        .map(|(y, t)| decorate(b, x, y, layer, t, lora, u))
        .collect::<Result<Vec<_>>>()?;
    decorated.try_into().map_err(|_| Error::Backend("projection count".into()))
}

/// The LoRA part of a projection's backward: adds dA and dB to `grads`, returns the term's share of dx, to be
/// added times the returned scale.
#[allow(clippy::too_many_arguments)]
fn lora_backward<B: TrainBackend>(
    b: &B,
    x: &B::Tensor,
    dy: &B::Tensor,
    layer: usize,
    target: Target,
    lora: &DeviceLora<B>,
    tape_u: &BTreeMap<Target, B::Tensor>,
    grads: &mut GradSums<B::Tensor>,
) -> Result<Option<(B::Tensor, f32)>> {
    let (Some(m), Some(u)) = (lora.module(layer, target), tape_u.get(&target)) else { return Ok(None) };
    // y += s · u · Bᵀ with u = x · Aᵀ; every gradient below lacks its factor s, applied once at the end.
    let db = b.mm(dy, u, true, false)?; // [out, r]
    let du = b.mm(dy, &m.b, false, false)?; // [rows, r]
    let da = b.mm(&du, x, true, false)?; // [r, in]
    let dx = b.mm(&du, &m.a, false, false)?; // [rows, in]
    grads.add(b, layer, target, da, db)?;
    Ok(Some((dx, m.scale)))
}

/// dx of a group of projections (apart or packed) given each output's gradient.
fn project_backward<B: TrainBackend>(b: &B, p: &Projections<B::Weight>, dys: &[B::Tensor]) -> Result<B::Tensor> {
    match p {
        Projections::Apart(ws) => {
            let mut dx = b.matmul_grad_x(&dys[0], &ws[0])?;
            for (w, dy) in ws.iter().zip(dys).skip(1) {
                dx = b.add(&dx, &b.matmul_grad_x(dy, w)?)?;
            }
            Ok(dx)
        }
        Projections::Packed { weight, .. } => b.matmul_grad_x(&b.concat_cols(dys)?, weight),
    }
}

/// dx through a group of decorated projections of input `x`.
#[allow(clippy::too_many_arguments)]
fn decorated_backward<B: TrainBackend>(
    b: &B,
    p: &Projections<B::Weight>,
    targets: &[Target],
    x: &B::Tensor,
    dys: &[B::Tensor],
    layer: usize,
    lora: &DeviceLora<B>,
    t: &BTreeMap<Target, B::Tensor>,
    grads: &mut GradSums<B::Tensor>,
) -> Result<B::Tensor> {
    let mut dx = project_backward(b, p, dys)?;
    for (&target, dy) in targets.iter().zip(dys) {
        if let Some((extra, s)) = lora_backward(b, x, dy, layer, target, lora, t, grads)? {
            dx = b.add_scaled(&dx, &extra, s)?;
        }
    }
    Ok(dx)
}

#[allow(clippy::too_many_arguments)]
fn layer_backward<B: TrainBackend>(
    b: &B,
    model: &Transformer<B>,
    layer: &Layer<B>,
    i: usize,
    lora: &DeviceLora<B>,
    stack: &Stack,
    t: &LayerTape<B::Tensor>,
    dx_out: B::Tensor,
    grads: &mut GradSums<B::Tensor>,
) -> Result<B::Tensor> {
    let cfg = &model.config;
    let eps = cfg.rms_norm_eps as f32;
    let p = &layer.attention;
    let rope = &model.ropes[layer.rope];

    // x_out = x_mid + post_ffn_norm(m), m = down(act) + LoRA, act = act(gate) · up.
    let dm = post_norm_backward(b, layer.post_ffn_norm.as_ref(), &t.m, dx_out.clone(), eps)?;
    let mut dact = b.matmul_grad_x(&dm, &layer.down)?;
    if let Some((extra, s)) = lora_backward(b, &t.act, &dm, i, Target::Down, lora, &t.u, grads)? {
        dact = b.add_scaled(&dact, &extra, s)?;
    }
    let (dgate, dup) = b.gated_backward(&t.gate, &t.up, &dact, cfg.hidden_act)?;
    let dh2 =
        decorated_backward(b, &layer.gate_up, &[Target::Gate, Target::Up], &t.h2, &[dgate, dup], i, lora, &t.u, grads)?;
    let dx_mid = b.add(&dx_out, &b.rms_norm_backward(&t.x_mid, &layer.ffn_norm, &dh2, eps)?)?;

    // x_mid = x_in + post_attn_norm(o), o = o_proj(att) + LoRA, att = attention(rope(q), rope(k), v).
    let d_o = post_norm_backward(b, layer.post_attn_norm.as_ref(), &t.o, dx_mid.clone(), eps)?;
    let mut datt = b.matmul_grad_x(&d_o, &layer.o)?;
    if let Some((extra, s)) = lora_backward(b, &t.att, &d_o, i, Target::O, lora, &t.u, grads)? {
        datt = b.add_scaled(&datt, &extra, s)?;
    }
    let [mut dq, mut dk, dv] = stack.per_sequence(b, [&t.q, &t.k, &t.v, &t.att, &t.lse, &datt], |[q, k, v, att, lse, datt]| {
        let (dq, dk, dv) = b.attention_backward(&q, &k, &v, &att, &lse, &datt, p)?;
        Ok([b.rope_backward(&dq, rope, p.n_heads)?, b.rope_backward(&dk, rope, p.n_kv_heads)?, dv])
    })?;
    if let (Some((q_pre, k_pre)), Some(qn), Some(kn)) = (&t.qk_pre, &layer.q_norm, &layer.k_norm) {
        dq = b.rms_norm_backward(q_pre, qn, &dq, eps)?;
        dk = b.rms_norm_backward(k_pre, kn, &dk, eps)?;
    }
    let dh = decorated_backward(
        b,
        &layer.qkv,
        &[Target::Q, Target::K, Target::V],
        &t.h,
        &[dq, dk, dv],
        i,
        lora,
        &t.u,
        grads,
    )?;
    b.add(&dx_mid, &b.rms_norm_backward(&t.x_in, &layer.attn_norm, &dh, eps)?)
}
