//! Residual add, softcap and the gated activations of the MLP (shaders/elementwise.wgsl).

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor};
use crate::config::Activation;
use crate::{Error, Result};

const SOURCE: &str = concat!(
    include_str!("../../../../shaders/exact.wgsl"),
    include_str!("../../../../shaders/round_block.wgsl"),
    include_str!("../../../../shaders/elementwise_no_gelu_table.wgsl"),
    include_str!("../../../../shaders/elementwise.wgsl")
);
/// OP 6 (the exact path's GELU): SOURCE with ggml's GELU table bound at binding 6.
const SOURCE_GELU_TABLE: &str = concat!(
    include_str!("../../../../shaders/exact.wgsl"),
    include_str!("../../../../shaders/round_block.wgsl"),
    include_str!("../../../../shaders/elementwise_gelu_table.wgsl"),
    include_str!("../../../../shaders/elementwise.wgsl")
);
const OP_GELU_TABLE: u32 = 6;
const WORKGROUP: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    cap: f32,
    /// round_block.wgsl's mode (gated_round only).
    mode: u32,
    cols: u32,
    /// (offset, stride) of a's and b's rows in their buffers: gate and up may be windows of one packed product.
    a_at: [u32; 2],
    b_at: [u32; 2],
    /// Always 0: the opaque zero of exact.wgsl.
    zero: u32,
    _pad: [u32; 3],
}

fn params(a: &GpuTensor, b: &GpuTensor, cap: f32, mode: u32) -> Params {
    let (a_at, b_at) = (a.window().1, b.window().1);
    Params {
        n: a.len() as u32,
        cap,
        mode,
        cols: a.cols.max(1) as u32,
        a_at: [a_at.offset, a_at.stride],
        b_at: [b_at.offset, b_at.stride],
        zero: 0,
        _pad: [0; 3],
    }
}

fn launch(
    b: &GpuBackend,
    op: u32,
    a: &GpuTensor,
    other: &GpuTensor,
    cap: f32,
) -> Result<GpuTensor> {
    let out = b.tensor(a.rows, a.cols);
    let mut access = vec![Access::Read, Access::Read, Access::ReadWrite];
    let mut bufs = vec![a.window().0, other.window().0, out.buf()];
    if op == OP_GELU_TABLE {
        // Bindings 4 and 5 (gated_round's) sit between out and the table.
        access.extend([Access::ReadWrite, Access::ReadWrite, Access::Read]);
        bufs.extend([b.unused(), b.unused(), gelu_table(b)]);
    }
    let kernel = b.rec.kernel(
        "elementwise",
        source(op),
        &[("OP", format!("{op}u"))],
        &access,
    );
    let params = params(a, other, cap, 0);
    b.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &bufs,
        grid(a.len().div_ceil(WORKGROUP) as u32),
    )?;
    Ok(out)
}

fn source(op: u32) -> &'static str {
    if op == OP_GELU_TABLE {
        SOURCE_GELU_TABLE
    } else {
        SOURCE
    }
}

/// ggml's GELU table as the CPU backend builds it, uploaded on first use.
fn gelu_table(b: &GpuBackend) -> &super::GpuBuf {
    b.gelu_table.get_or_init(|| {
        let table = crate::backend::cpu::ops::gelu_table_bits();
        b.storage_buffer(bytemuck::cast_slice(table), "gelu table")
    })
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

pub(crate) fn add(b: &GpuBackend, x: &GpuTensor, y: &GpuTensor) -> Result<GpuTensor> {
    same_shape(x, y, "add")?;
    launch(b, 0, x, y, 0.0)
}

pub(crate) fn softcap(b: &GpuBackend, x: &GpuTensor, cap: f32) -> Result<GpuTensor> {
    launch(b, 1, x, x, cap)
}

fn gated_op(b: &GpuBackend, act: Activation) -> u32 {
    match act {
        // The exact path's SiLU is ggml's 8-lane one (its polynomial exp); a row's last cols % 8 values, which the
        // CPU computes with libm's expf, get it too (no model we run has such rows).
        Activation::Silu if b.rec.ctx.exact => 5,
        Activation::Silu => 2,
        Activation::GeluTanh => 3,
        // GGUF models follow llama.cpp's numerics, whose GELU goes through an f16 table: the exact path looks it up
        // in the CPU's own table, the others compute the entry.
        Activation::GeluTanhF16Table if b.rec.ctx.exact => OP_GELU_TABLE,
        Activation::GeluTanhF16Table => 4,
    }
}

pub(crate) fn gated(
    b: &GpuBackend,
    gate: &GpuTensor,
    up: &GpuTensor,
    act: Activation,
) -> Result<GpuTensor> {
    same_shape(gate, up, "gated activation")?;
    launch(b, gated_op(b, act), gate, up, 0.0)
}

/// `gated`, also rounded in `mode` (round_block.wgsl) in the same pass for the product that reads it next:
/// (activation, rounded, Q8_1's sums). Rows must be whole blocks of the mode.
pub(crate) fn gated_round(
    b: &GpuBackend,
    gate: &GpuTensor,
    up: &GpuTensor,
    act: Activation,
    mode: u32,
) -> Result<(GpuTensor, GpuTensor, Option<GpuTensor>)> {
    same_shape(gate, up, "gated activation")?;
    let (out, rounded) = (
        b.tensor(gate.rows, gate.cols),
        b.tensor(gate.rows, gate.cols),
    );
    let sums = super::activation_rounding::delta_tensor(b, mode, gate.rows, gate.cols);
    let op = gated_op(b, act);
    let mut access = vec![
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
    ];
    if op == OP_GELU_TABLE {
        access.push(Access::Read);
    }
    let kernel = b.rec.kernel_entry(
        "elementwise",
        source(op),
        "gated_round",
        &[("OP", format!("{op}u"))],
        &access,
    );
    let params = params(gate, up, 0.0, mode);
    let blocks = gate.len() / super::activation_rounding::block_size(mode);
    let delta = sums.as_ref().map_or(b.unused(), |s| s.buf());
    let mut bufs = vec![
        gate.window().0,
        up.window().0,
        out.buf(),
        rounded.buf(),
        delta,
    ];
    if op == OP_GELU_TABLE {
        bufs.push(gelu_table(b));
    }
    b.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &bufs,
        grid(blocks.div_ceil(64) as u32),
    )?;
    Ok((out, rounded, sums))
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::CpuBackend;
    use crate::backend::gpu::testing::{assert_close, backend, read, values};
    use crate::backend::Backend;
    use crate::config::Activation;

    fn cpu_rows(x: &[f32], rows: usize, cols: usize) -> candle_core::Tensor {
        candle_core::Tensor::from_slice(x, (rows, cols), &candle_core::Device::Cpu).unwrap()
    }

    #[test]
    fn elementwise_ops_match_the_cpu() {
        let Some(g) = backend() else { return };
        let c = CpuBackend::new();
        // 3 × 347 values: not a multiple of the 256-wide workgroup.
        let (rows, cols) = (3, 347);
        let (a, b) = (values(rows * cols, 1), values(rows * cols, 2));
        let a3: Vec<f32> = a.iter().map(|v| v * 40.0).collect();
        let (ga, gb, ga3) = (
            g.tensor_from_host(&a, rows, cols).unwrap(),
            g.tensor_from_host(&b, rows, cols).unwrap(),
            g.tensor_from_host(&a3, rows, cols).unwrap(),
        );
        let (ca, cb, ca3) = (
            cpu_rows(&a, rows, cols),
            cpu_rows(&b, rows, cols),
            cpu_rows(&a3, rows, cols),
        );
        let host = |t| futures::executor::block_on(c.to_host(&t)).unwrap().concat();
        assert_close(
            "add",
            &read(&g, &g.add(&ga, &gb).unwrap()),
            &host(c.add(&ca, &cb).unwrap()),
            1e-6,
        );
        assert_close(
            "softcap",
            &read(&g, &g.softcap(&ga3, 30.0).unwrap()),
            &host(c.softcap(&ca3, 30.0).unwrap()),
            1e-5,
        );
        for act in [
            Activation::Silu,
            Activation::GeluTanh,
            Activation::GeluTanhF16Table,
        ] {
            let got = read(&g, &g.gated_activation(&ga3, &gb, act).unwrap());
            let want = host(c.gated_activation(&ca3, &cb, act).unwrap());
            assert_close(&format!("{act:?}"), &got, &want, 1e-5);
        }
    }
}
