//! Training's elementwise ops (shaders/train_elementwise.wgsl): a + s·b, the gated activation in f32 and its
//! backward, the softcap's backward, column concatenation, and the per-head dot products of attention's backward.
//! Operands may be column windows of a packed product; outputs are dense.

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor, Layout};
use crate::config::Activation;
use crate::{Error, Result};

const SOURCE: &str = concat!(
    include_str!("../../../../shaders/train_tanh.wgsl"),
    include_str!("../../../../shaders/train_elementwise.wgsl")
);
/// Invocations per workgroup (WG in train_elementwise.wgsl).
const WORKGROUP: usize = 256;

/// OP in train_elementwise.wgsl.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    AddScaled = 0,
    Gated = 1,
    GatedBackward = 2,
    SoftcapBackward = 3,
    Copy = 4,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    s: f32,
    group: u32,
    /// (offset, stride) of each operand's rows in its buffer.
    a_at: [u32; 2],
    b_at: [u32; 2],
    c_at: [u32; 2],
    out_at: [u32; 2],
}

fn at(l: Layout) -> [u32; 2] {
    [l.offset, l.stride]
}

fn dense_at(cols: usize) -> [u32; 2] {
    [0, cols as u32]
}

/// ACT in train_elementwise.wgsl. Training follows PyTorch's GELU, never ggml's f16 table (that is inference's
/// rounding of GGUF models, which the gradient must not follow).
fn act_define(act: Activation) -> (&'static str, String) {
    let id = match act {
        Activation::Silu => 0,
        Activation::GeluTanh | Activation::GeluTanhF16Table => 1,
    };
    ("ACT", format!("{id}u"))
}

fn same_shape(a: &GpuTensor, b: &GpuTensor, what: &str) -> Result<()> {
    if (a.rows, a.cols) != (b.rows, b.cols) {
        return Err(Error::Backend(format!(
            "{what} of tensors shaped [{}, {}] and [{}, {}]",
            a.rows, a.cols, b.rows, b.cols
        )));
    }
    Ok(())
}

/// One dispatch of `op` over a's shape: reads a, b, c (b and c default to a), writes out (at `out_at` in `out`) and,
/// for the gated backward, out2.
#[allow(clippy::too_many_arguments)]
fn launch(
    g: &GpuBackend,
    op: Op,
    act: Activation,
    s: f32,
    [a, b, c]: [&GpuTensor; 3],
    out: &GpuTensor,
    out_at: [u32; 2],
    out2: Option<&GpuTensor>,
) -> Result<()> {
    let kernel = g.rec.kernel(
        "train_elementwise",
        SOURCE,
        &[("OP", format!("{}u", op as u32)), act_define(act)],
        &[
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
        ],
    );
    let params = Params {
        rows: a.rows as u32,
        cols: a.cols as u32,
        s,
        group: 1,
        a_at: at(a.window().1),
        b_at: at(b.window().1),
        c_at: at(c.window().1),
        out_at,
    };
    let bufs = [
        a.window().0,
        b.window().0,
        c.window().0,
        out.window().0,
        out2.map_or(g.unused(), |t| t.buf()),
    ];
    g.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &bufs,
        grid(a.len().div_ceil(WORKGROUP) as u32),
    )
}

/// x itself when dense, else a dense copy (for kernels that read tensors whole).
pub(crate) fn dense(g: &GpuBackend, x: &GpuTensor) -> Result<GpuTensor> {
    if x.is_dense() {
        return Ok(x.clone());
    }
    let out = g.tensor(x.rows, x.cols);
    launch(
        g,
        Op::Copy,
        Activation::Silu,
        0.0,
        [x, x, x],
        &out,
        dense_at(x.cols),
        None,
    )?;
    Ok(out)
}

pub(crate) fn add_scaled(
    g: &GpuBackend,
    a: &GpuTensor,
    b: &GpuTensor,
    s: f32,
) -> Result<GpuTensor> {
    same_shape(a, b, "add_scaled")?;
    let out = g.tensor(a.rows, a.cols);
    launch(
        g,
        Op::AddScaled,
        Activation::Silu,
        s,
        [a, b, a],
        &out,
        dense_at(a.cols),
        None,
    )?;
    Ok(out)
}

pub(crate) fn concat_cols(g: &GpuBackend, parts: &[GpuTensor]) -> Result<GpuTensor> {
    let rows = parts
        .first()
        .map(|p| p.rows)
        .ok_or_else(|| Error::Backend("no columns to join".into()))?;
    if parts.iter().any(|p| p.rows != rows) {
        return Err(Error::Backend(
            "joining columns of tensors with different row counts".into(),
        ));
    }
    let cols: usize = parts.iter().map(|p| p.cols).sum();
    let out = g.tensor(rows, cols);
    let mut offset = 0;
    for part in parts {
        launch(
            g,
            Op::Copy,
            Activation::Silu,
            0.0,
            [part, part, part],
            &out,
            [offset as u32, cols as u32],
            None,
        )?;
        offset += part.cols;
    }
    Ok(out)
}

pub(crate) fn gated(
    g: &GpuBackend,
    gate: &GpuTensor,
    up: &GpuTensor,
    act: Activation,
) -> Result<GpuTensor> {
    same_shape(gate, up, "gated activation")?;
    let out = g.tensor(gate.rows, gate.cols);
    launch(
        g,
        Op::Gated,
        act,
        0.0,
        [gate, up, gate],
        &out,
        dense_at(gate.cols),
        None,
    )?;
    Ok(out)
}

pub(crate) fn gated_backward(
    g: &GpuBackend,
    gate: &GpuTensor,
    up: &GpuTensor,
    dy: &GpuTensor,
    act: Activation,
) -> Result<(GpuTensor, GpuTensor)> {
    same_shape(gate, up, "gated activation's backward")?;
    same_shape(gate, dy, "gated activation's backward")?;
    let (dgate, dup) = (
        g.tensor(gate.rows, gate.cols),
        g.tensor(gate.rows, gate.cols),
    );
    launch(
        g,
        Op::GatedBackward,
        act,
        0.0,
        [gate, up, dy],
        &dgate,
        dense_at(gate.cols),
        Some(&dup),
    )?;
    Ok((dgate, dup))
}

pub(crate) fn softcap_backward(
    g: &GpuBackend,
    y: &GpuTensor,
    dy: &GpuTensor,
    cap: f32,
) -> Result<GpuTensor> {
    same_shape(y, dy, "softcap's backward")?;
    if !(cap.is_finite() && cap != 0.0) {
        return Err(Error::Backend(format!(
            "softcap's backward with a cap of {cap}"
        )));
    }
    let out = g.tensor(y.rows, y.cols);
    launch(
        g,
        Op::SoftcapBackward,
        Activation::Silu,
        cap,
        [y, dy, y],
        &out,
        dense_at(y.cols),
        None,
    )?;
    Ok(out)
}

/// Σ a · b over each consecutive `group` values of dense a and b → `[a.rows, a.cols / group]`.
pub(crate) fn group_dot(
    g: &GpuBackend,
    a: &GpuTensor,
    b: &GpuTensor,
    group: usize,
) -> Result<GpuTensor> {
    same_shape(a, b, "group dot")?;
    if group == 0 || !a.cols.is_multiple_of(group) || !a.is_dense() || !b.is_dense() {
        return Err(Error::Backend(format!(
            "dot products over groups of {group} of {} columns",
            a.cols
        )));
    }
    let out = g.tensor(a.rows, a.cols / group);
    let kernel = g.rec.kernel_entry(
        "train_elementwise",
        SOURCE,
        "group_dot",
        // OP and ACT are unused here; fixed so the entry compiles once.
        &[("OP", "0u".into()), act_define(Activation::Silu)],
        &[
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
        ],
    );
    let params = Params {
        rows: a.rows as u32,
        cols: a.cols as u32,
        s: 0.0,
        group: group as u32,
        a_at: dense_at(a.cols),
        b_at: dense_at(b.cols),
        c_at: dense_at(a.cols),
        out_at: dense_at(out.cols),
    };
    let bufs = [a.buf(), b.buf(), a.buf(), out.buf(), g.unused()];
    g.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &bufs,
        grid(out.len().div_ceil(WORKGROUP) as u32),
    )?;
    Ok(out)
}
