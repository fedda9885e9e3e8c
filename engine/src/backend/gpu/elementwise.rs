//! Residual add, softcap and the gated activations of the MLP (shaders/elementwise.wgsl).

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor};
use crate::config::Activation;
use crate::{Error, Result};

const SOURCE: &str = concat!(
    include_str!("../../../shaders/round_block.wgsl"),
    include_str!("../../../shaders/elementwise.wgsl")
);
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
    let kernel = b.rec.kernel(
        "elementwise",
        SOURCE,
        &[("OP", format!("{op}u"))],
        &[Access::Read, Access::Read, Access::ReadWrite],
    );
    let params = params(a, other, cap, 0);
    b.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[a.window().0, other.window().0, out.buf()],
        grid(a.len().div_ceil(WORKGROUP) as u32),
    )?;
    Ok(out)
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

fn gated_op(act: Activation) -> u32 {
    match act {
        Activation::Silu => 2,
        Activation::GeluTanh => 3,
        // GGUF models follow llama.cpp's numerics, whose GELU goes through an f16 table.
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
    launch(b, gated_op(act), gate, up, 0.0)
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
    let sums =
        (mode == super::activation_rounding::Q8_1).then(|| b.tensor(gate.rows, gate.cols / 32));
    let access = [
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
    ];
    let kernel = b.rec.kernel_entry(
        "elementwise",
        SOURCE,
        "gated_round",
        &[("OP", format!("{}u", gated_op(act)))],
        &access,
    );
    let params = params(gate, up, 0.0, mode);
    let blocks = gate.len() / super::activation_rounding::block_size(mode);
    let delta = sums.as_ref().map_or(b.unused(), |s| s.buf());
    let bufs = [
        gate.window().0,
        up.window().0,
        out.buf(),
        rounded.buf(),
        delta,
    ];
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
