//! Causal self-attention of one sequence for training and its backward pass (shaders/train_attention.wgsl,
//! train_attention_backward.wgsl and what they share, train_attention_common.wgsl). The forward keeps each row's
//! log-sum-exp; the backward rebuilds the probabilities from it, so memory grows with the sequence, not its square.
//! The backward is three dispatches: D = dout · out per row and head (train_ops.rs's group_dot), dq per (row, head),
//! then dk and dv per (key, kv head), so every output value has one owner.

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor};
use crate::backend::AttentionParams;
use crate::{Error, Result};

const FORWARD: &str = concat!(
    include_str!("../../../../shaders/train_tanh.wgsl"),
    include_str!("../../../../shaders/train_attention_common.wgsl"),
    include_str!("../../../../shaders/train_attention.wgsl")
);
const BACKWARD: &str = concat!(
    include_str!("../../../../shaders/train_tanh.wgsl"),
    include_str!("../../../../shaders/train_attention_common.wgsl"),
    include_str!("../../../../shaders/train_attention_backward.wgsl")
);
/// Invocations per workgroup (WG in train_attention_common.wgsl): each keeps head values lid + WG · slot.
const WORKGROUP: usize = 64;
/// Longest head the kernels take (Gemma's 256): SLOTS ≤ 4.
const MAX_HEAD_DIM: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    heads: u32,
    kv_heads: u32,
    d: u32,
    scale: f32,
    /// 0: no softcap.
    cap: f32,
    /// 0: no window.
    window: u32,
    _pad: u32,
}

/// The uniforms and SLOTS of q, k and v shaped for `p`, or why they are not.
fn setup(
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    p: &AttentionParams,
) -> Result<(Params, [(&'static str, String); 1])> {
    let (heads, kv_heads, d) = (p.n_heads, p.n_kv_heads, p.head_dim);
    let rows = q.rows;
    if kv_heads == 0
        || heads % kv_heads != 0
        || d == 0
        || (q.rows, q.cols) != (rows, heads * d)
        || (k.rows, k.cols) != (rows, kv_heads * d)
        || (v.rows, v.cols) != (rows, kv_heads * d)
    {
        return Err(Error::Backend(format!(
            "attention of {heads} heads over {kv_heads} kv heads of {d} on q [{}, {}], k [{}, {}], v [{}, {}]",
            q.rows, q.cols, k.rows, k.cols, v.rows, v.cols
        )));
    }
    if d > MAX_HEAD_DIM {
        return Err(Error::Unsupported(format!(
            "training attention with heads of {d} values (the GPU kernels take up to {MAX_HEAD_DIM})"
        )));
    }
    if p.window == Some(0) || p.softcap.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        return Err(Error::Backend(format!(
            "attention with window {:?} and softcap {:?}",
            p.window, p.softcap
        )));
    }
    let params = Params {
        rows: rows as u32,
        heads: heads as u32,
        kv_heads: kv_heads as u32,
        d: d as u32,
        scale: p.scale,
        cap: p.softcap.unwrap_or(0.0),
        // A window as long as the sequence hides nothing; u32 keeps it in range.
        window: p.window.map_or(0, |w| w.min(u32::MAX as usize) as u32),
        _pad: 0,
    };
    Ok((params, [("SLOTS", format!("{}u", d.div_ceil(WORKGROUP)))]))
}

/// (out `[rows, heads · d]`, lse `[rows, heads]`).
pub(crate) fn attention_f32(
    g: &GpuBackend,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    p: &AttentionParams,
) -> Result<(GpuTensor, GpuTensor)> {
    let (params, slots) = setup(q, k, v, p)?;
    let dense = |t: &GpuTensor| super::train_ops::dense(g, t);
    let (q, k, v) = (dense(q)?, dense(k)?, dense(v)?);
    let (out, lse) = (g.tensor(q.rows, q.cols), g.tensor(q.rows, p.n_heads));
    let kernel = g.rec.kernel(
        "train_attention",
        FORWARD,
        &slots,
        &[
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
        ],
    );
    g.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[q.buf(), k.buf(), v.buf(), out.buf(), lse.buf()],
        grid((q.rows * p.n_heads) as u32),
    )?;
    Ok((out, lse))
}

/// (dq, dk, dv) given d out.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    g: &GpuBackend,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    out: &GpuTensor,
    lse: &GpuTensor,
    dout: &GpuTensor,
    p: &AttentionParams,
) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
    let (params, slots) = setup(q, k, v, p)?;
    if (out.rows, out.cols) != (q.rows, q.cols)
        || (dout.rows, dout.cols) != (q.rows, q.cols)
        || (lse.rows, lse.cols) != (q.rows, p.n_heads)
    {
        return Err(Error::Backend(
            "attention backward: saved tensors do not match q".into(),
        ));
    }
    let dense = |t: &GpuTensor| super::train_ops::dense(g, t);
    let (q, k, v, out, lse, dout) = (
        dense(q)?,
        dense(k)?,
        dense(v)?,
        dense(out)?,
        dense(lse)?,
        dense(dout)?,
    );
    let delta = super::train_ops::group_dot(g, &dout, &out, p.head_dim)?;
    let (dq, dk, dv) = (
        g.tensor(q.rows, q.cols),
        g.tensor(k.rows, k.cols),
        g.tensor(v.rows, v.cols),
    );
    let access = [Access::Read; 6]
        .into_iter()
        .chain([Access::ReadWrite; 2])
        .collect::<Vec<_>>();
    let saved = [
        q.buf(),
        k.buf(),
        v.buf(),
        lse.buf(),
        dout.buf(),
        delta.buf(),
    ];
    let bufs = |a, b| {
        let mut all = saved.to_vec();
        all.extend([a, b]);
        all
    };
    let kernel = g
        .rec
        .kernel_entry("train_attention_backward", BACKWARD, "dq", &slots, &access);
    g.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &bufs(dq.buf(), g.unused()),
        grid((q.rows * p.n_heads) as u32),
    )?;
    let kernel = g
        .rec
        .kernel_entry("train_attention_backward", BACKWARD, "dkv", &slots, &access);
    g.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &bufs(dk.buf(), dv.buf()),
        grid((k.rows * p.n_kv_heads) as u32),
    )?;
    Ok((dq, dk, dv))
}
