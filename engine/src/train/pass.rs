//! One training pass over a batch: the forward pass of [`crate::model::Transformer`] in f32, keeping what the
//! backward pass needs, the loss, and the backward pass down to the gradients of the LoRA matrices — the base stays
//! frozen in its file's quantization. Each sequence runs alone (positions from 0, no padding mask needed: ch. 7's
//! padding follows the real tokens, and causal attention never lets a real token see it); the batch's loss is the
//! mean over every scored target of every sequence, so each sequence's targets weigh 1 / (scored targets in the
//! batch).

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

/// The loss of `batch` and the gradients of `lora`'s matrices.
pub async fn loss_and_grads<B: TrainBackend>(
    b: &B,
    model: &Transformer<B>,
    lora: &DeviceLora<B>,
    batch: &[Example],
) -> Result<Outcome> {
    let tokens: usize = batch.iter().map(|e| e.targets.iter().filter(|t| t.is_some()).count()).sum();
    if tokens == 0 {
        return Err(Error::InvalidArgument("the batch has no target to learn (every position is masked)".into()));
    }
    let weight = 1.0 / tokens as f32;
    let mut grads = Grads::zeros_like(lora);
    let mut loss = 0f32;
    for example in batch {
        loss += sequence(b, model, lora, example, weight, Some(&mut grads)).await?;
    }
    Ok(Outcome { loss, tokens, grads })
}

/// The batch's mean loss alone (validation): the forward pass, no backward.
pub async fn loss<B: TrainBackend>(b: &B, model: &Transformer<B>, lora: &DeviceLora<B>, batch: &[Example]) -> Result<f32> {
    let tokens: usize = batch.iter().map(|e| e.targets.iter().filter(|t| t.is_some()).count()).sum();
    if tokens == 0 {
        return Err(Error::InvalidArgument("the batch has no target to score (every position is masked)".into()));
    }
    let mut loss = 0f32;
    for example in batch {
        loss += sequence(b, model, lora, example, 1.0 / tokens as f32, None).await?;
    }
    Ok(loss)
}

/// What the forward pass of one sequence kept, and its logits (after the final softcap).
struct Forward<T> {
    tape: Vec<LayerTape<T>>,
    x_final: T,
    logits: T,
}

/// Embedding, every block (kept on the tape), final norm, head, softcap.
fn forward<B: TrainBackend>(b: &B, model: &Transformer<B>, lora: &DeviceLora<B>, inputs: &[u32]) -> Result<Forward<B::Tensor>> {
    let cfg = &model.config;
    let eps = cfg.rms_norm_eps as f32;
    let mut x = b.embed(&model.embed, inputs, cfg.embedding_scale)?;
    let mut tape = Vec::with_capacity(model.layers.len());
    for (i, layer) in model.layers.iter().enumerate() {
        let t = layer_forward(b, model, layer, i, lora, x)?;
        x = b.add(&t.x_mid, &post_norm(b, layer.post_ffn_norm.as_ref(), &t.m, eps)?)?;
        tape.push(t);
    }
    let xf = b.rms_norm(&x, &model.final_norm, eps)?;
    let head = model.lm_head.as_ref().unwrap_or(&model.embed);
    let mut logits = b.matmul_f32(&xf, head)?;
    if let Some(cap) = cfg.final_logit_softcapping {
        logits = b.softcap(&logits, cap as f32)?;
    }
    Ok(Forward { tape, x_final: x, logits })
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
    b.read(&forward(b, model, lora, inputs)?.logits).await
}

/// Forward and (with `grads`) backward of one sequence, adding its gradients to `grads`; returns its share of the
/// loss.
async fn sequence<B: TrainBackend>(
    b: &B,
    model: &Transformer<B>,
    lora: &DeviceLora<B>,
    ex: &Example,
    weight: f32,
    grads: Option<&mut Grads>,
) -> Result<f32> {
    if ex.inputs.is_empty() || ex.inputs.len() != ex.targets.len() {
        return Err(Error::InvalidArgument(format!(
            "an example of {} inputs and {} targets",
            ex.inputs.len(),
            ex.targets.len()
        )));
    }
    let cfg = &model.config;
    let eps = cfg.rms_norm_eps as f32;
    let Forward { tape, x_final, logits } = forward(b, model, lora, &ex.inputs)?;
    let head = model.lm_head.as_ref().unwrap_or(&model.embed);
    let (loss, mut dlogits) = b.cross_entropy(&logits, &ex.targets, weight)?;
    let loss = b.read(&loss).await?.first().copied().unwrap_or(f32::NAN);
    let Some(grads) = grads else { return Ok(loss) };

    // Backward, top to bottom.
    if let Some(cap) = cfg.final_logit_softcapping {
        dlogits = b.softcap_backward(&logits, &dlogits, cap as f32)?;
    }
    let dxf = b.matmul_grad_x(&dlogits, head)?;
    let mut dx = b.rms_norm_backward(&x_final, &model.final_norm, &dxf, eps)?;
    for (i, (layer, t)) in model.layers.iter().zip(&tape).enumerate().rev() {
        dx = layer_backward(b, model, layer, i, lora, t, dx, grads).await?;
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
    let q = b.rope(&q, rope, p.n_heads, 0)?;
    let k = b.rope(&k, rope, p.n_kv_heads, 0)?;
    let (att, lse) = b.attention_f32(&q, &k, &v, p)?;
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
async fn lora_backward<B: TrainBackend>(
    b: &B,
    x: &B::Tensor,
    dy: &B::Tensor,
    layer: usize,
    target: Target,
    lora: &DeviceLora<B>,
    tape_u: &BTreeMap<Target, B::Tensor>,
    grads: &mut Grads,
) -> Result<Option<(B::Tensor, f32)>> {
    let (Some(m), Some(u)) = (lora.module(layer, target), tape_u.get(&target)) else { return Ok(None) };
    // y += s · u · Bᵀ with u = x · Aᵀ; every gradient below lacks its factor s, applied once at the end.
    let db = b.mm(dy, u, true, false)?; // [out, r]
    let du = b.mm(dy, &m.b, false, false)?; // [rows, r]
    let da = b.mm(&du, x, true, false)?; // [r, in]
    let dx = b.mm(&du, &m.a, false, false)?; // [rows, in]
    grads.add(layer, target, &b.read(&da).await?, &b.read(&db).await?, m.scale)?;
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
async fn decorated_backward<B: TrainBackend>(
    b: &B,
    p: &Projections<B::Weight>,
    targets: &[Target],
    x: &B::Tensor,
    dys: &[B::Tensor],
    layer: usize,
    lora: &DeviceLora<B>,
    t: &BTreeMap<Target, B::Tensor>,
    grads: &mut Grads,
) -> Result<B::Tensor> {
    let mut dx = project_backward(b, p, dys)?;
    for (&target, dy) in targets.iter().zip(dys) {
        if let Some((extra, s)) = lora_backward(b, x, dy, layer, target, lora, t, grads).await? {
            dx = b.add_scaled(&dx, &extra, s)?;
        }
    }
    Ok(dx)
}

#[allow(clippy::too_many_arguments)]
async fn layer_backward<B: TrainBackend>(
    b: &B,
    model: &Transformer<B>,
    layer: &Layer<B>,
    i: usize,
    lora: &DeviceLora<B>,
    t: &LayerTape<B::Tensor>,
    dx_out: B::Tensor,
    grads: &mut Grads,
) -> Result<B::Tensor> {
    let cfg = &model.config;
    let eps = cfg.rms_norm_eps as f32;
    let p = &layer.attention;
    let rope = &model.ropes[layer.rope];

    // x_out = x_mid + post_ffn_norm(m), m = down(act) + LoRA, act = act(gate) · up.
    let dm = post_norm_backward(b, layer.post_ffn_norm.as_ref(), &t.m, dx_out.clone(), eps)?;
    let mut dact = b.matmul_grad_x(&dm, &layer.down)?;
    if let Some((extra, s)) = lora_backward(b, &t.act, &dm, i, Target::Down, lora, &t.u, grads).await? {
        dact = b.add_scaled(&dact, &extra, s)?;
    }
    let (dgate, dup) = b.gated_backward(&t.gate, &t.up, &dact, cfg.hidden_act)?;
    let dh2 =
        decorated_backward(b, &layer.gate_up, &[Target::Gate, Target::Up], &t.h2, &[dgate, dup], i, lora, &t.u, grads)
            .await?;
    let dx_mid = b.add(&dx_out, &b.rms_norm_backward(&t.x_mid, &layer.ffn_norm, &dh2, eps)?)?;

    // x_mid = x_in + post_attn_norm(o), o = o_proj(att) + LoRA, att = attention(rope(q), rope(k), v).
    let d_o = post_norm_backward(b, layer.post_attn_norm.as_ref(), &t.o, dx_mid.clone(), eps)?;
    let mut datt = b.matmul_grad_x(&d_o, &layer.o)?;
    if let Some((extra, s)) = lora_backward(b, &t.att, &d_o, i, Target::O, lora, &t.u, grads).await? {
        datt = b.add_scaled(&datt, &extra, s)?;
    }
    let (dq, dk, dv) = b.attention_backward(&t.q, &t.k, &t.v, &t.att, &t.lse, &datt, p)?;
    let mut dq = b.rope_backward(&dq, rope, p.n_heads)?;
    let mut dk = b.rope_backward(&dk, rope, p.n_kv_heads)?;
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
    )
    .await?;
    b.add(&dx_mid, &b.rms_norm_backward(&t.x_in, &layer.attn_norm, &dh, eps)?)
}
