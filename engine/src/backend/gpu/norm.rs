//! RMSNorm over rows or heads (shaders/rms_norm.wgsl).

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor};
use crate::{Error, Result};

const SOURCE: &str = concat!(
    include_str!("../../../../shaders/exact.wgsl"),
    include_str!("../../../../shaders/round_block.wgsl"),
    include_str!("../../../../shaders/rms_norm.wgsl")
);

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    group: u32,
    groups: u32,
    eps: f32,
    /// round_block.wgsl's mode (add_norm_round only).
    mode: u32,
    /// 1: r is normalised by its own weight before the add (add_norm*).
    pre_norm: u32,
    /// Always 0: the opaque zero of exact.wgsl.
    zero: u32,
    _pad: [u32; 2],
}

/// rms_norm.wgsl's EXACT: the exact path sums squares as ggml does, in (float-float standing in for) double.
fn exact_define(b: &GpuBackend) -> [(&'static str, String); 1] {
    [("EXACT", format!("{}u", b.rec.ctx.exact as u32))]
}

fn params(x: &GpuTensor, w: &GpuTensor, eps: f32) -> Result<Params> {
    let group = w.len();
    if group == 0 || !x.len().is_multiple_of(group) {
        return Err(Error::Backend(format!(
            "RMSNorm over groups of {group} of a [{}, {}] tensor",
            x.rows, x.cols
        )));
    }
    Ok(Params {
        group: group as u32,
        groups: (x.len() / group) as u32,
        eps,
        mode: 0,
        pre_norm: 0,
        zero: 0,
        _pad: [0; 2],
    })
}

pub(crate) fn rms_norm(
    b: &GpuBackend,
    x: &GpuTensor,
    w: &GpuTensor,
    eps: f32,
) -> Result<GpuTensor> {
    let params = params(x, w, eps)?;
    let out = b.tensor(x.rows, x.cols);
    let kernel = b.rec.kernel(
        "rms_norm",
        SOURCE,
        &exact_define(b),
        &[Access::Read, Access::Read, Access::ReadWrite],
    );
    b.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[x.buf(), w.buf(), out.buf()],
        grid(params.groups),
    )?;
    Ok(out)
}

/// (x + r, rms_norm(x + r)) in one pass.
pub(crate) fn add_rms_norm(
    b: &GpuBackend,
    x: &GpuTensor,
    r: &GpuTensor,
    w: &GpuTensor,
    eps: f32,
) -> Result<(GpuTensor, GpuTensor)> {
    let (sum, out, _) = add_rms_norm_with(b, x, r, None, w, eps, None)?;
    Ok((sum, out))
}

/// A rounded copy of a tensor, with Q8_1's block sums (or on the exact path Q8_K's d per block).
pub(crate) type RoundedCopy = (GpuTensor, Option<GpuTensor>);

/// `add_rms_norm` in one pass, with r first normalised by `r_norm` when given (Gemma's post-attention and post-MLP
/// norms), and the normed rows also rounded in `mode` when given (round_block.wgsl) for the products that read them
/// next: (sum, normed, (rounded, Q8_1's sums)). Rows must be whole blocks of the mode.
pub(crate) fn add_rms_norm_with(
    b: &GpuBackend,
    x: &GpuTensor,
    r: &GpuTensor,
    r_norm: Option<&GpuTensor>,
    w: &GpuTensor,
    eps: f32,
    mode: Option<u32>,
) -> Result<(GpuTensor, GpuTensor, Option<RoundedCopy>)> {
    if (x.rows, x.cols) != (r.rows, r.cols) || r_norm.is_some_and(|n| n.len() != w.len()) {
        return Err(Error::Backend(format!(
            "add of [{}, {}] and [{}, {}] with a norm over rows of {}",
            x.rows,
            x.cols,
            r.rows,
            r.cols,
            r_norm.map_or(w.len(), |n| n.len())
        )));
    }
    let params = Params {
        mode: mode.unwrap_or(0),
        pre_norm: r_norm.is_some() as u32,
        ..params(x, w, eps)?
    };
    let (sum, out) = (b.tensor(x.rows, x.cols), b.tensor(x.rows, x.cols));
    let mut access = vec![
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::Read,
        Access::ReadWrite,
        Access::Read,
    ];
    let mut bufs = vec![
        x.buf(),
        w.buf(),
        out.buf(),
        r.buf(),
        sum.buf(),
        r_norm.unwrap_or(w).buf(),
    ];
    let rounded = mode.map(|mode| {
        let sums = super::activation_rounding::delta_tensor(b, mode, x.rows, x.cols);
        (b.tensor(x.rows, x.cols), sums)
    });
    if let Some((rounded, sums)) = &rounded {
        access.extend([Access::ReadWrite; 2]);
        bufs.extend([rounded.buf(), sums.as_ref().map_or(b.unused(), |s| s.buf())]);
    }
    let entry = if mode.is_some() {
        "add_norm_round"
    } else {
        "add_norm"
    };
    let kernel = b
        .rec
        .kernel_entry("rms_norm", SOURCE, entry, &exact_define(b), &access);
    b.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &bufs,
        grid(params.groups),
    )?;
    Ok((sum, out, rounded))
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::CpuBackend;
    use crate::backend::gpu::testing::{assert_close, backend, read, values};
    use crate::backend::Backend;

    #[test]
    fn rms_norm_matches_the_cpu_over_rows_and_heads() {
        let Some(g) = backend() else { return };
        let c = CpuBackend::new();
        // Row groups wider than the 256-wide workgroup, and head-sized groups (QK-norm) narrower than it.
        for (rows, cols, group) in [(3, 577, 577), (5, 6 * 40, 40), (1, 2048, 2048)] {
            let x = values(rows * cols, 7);
            let w = values(group, 8);
            let got = read(
                &g,
                &g.rms_norm(
                    &g.tensor_from_host(&x, rows, cols).unwrap(),
                    &g.upload_vector(&w).unwrap(),
                    1e-6,
                )
                .unwrap(),
            );
            let cx = candle_core::Tensor::from_slice(&x, (rows, cols), &candle_core::Device::Cpu)
                .unwrap();
            let want = c
                .rms_norm(&cx, &c.upload_vector(&w).unwrap(), 1e-6)
                .unwrap();
            let want = futures::executor::block_on(c.to_host(&want))
                .unwrap()
                .concat();
            assert_close(
                &format!("rms_norm [{rows}, {cols}] / {group}"),
                &got,
                &want,
                1e-5,
            );

            let r = values(rows * cols, 9);
            let (gx, gr) = (
                g.tensor_from_host(&x, rows, cols).unwrap(),
                g.tensor_from_host(&r, rows, cols).unwrap(),
            );
            let (sum, normed) = g
                .add_rms_norm(&gx, &gr, &g.upload_vector(&w).unwrap(), 1e-6)
                .unwrap();
            let cr = candle_core::Tensor::from_slice(&r, (rows, cols), &candle_core::Device::Cpu)
                .unwrap();
            let (csum, cnormed) = c
                .add_rms_norm(&cx, &cr, &c.upload_vector(&w).unwrap(), 1e-6)
                .unwrap();
            let host = |t| futures::executor::block_on(c.to_host(&t)).unwrap().concat();
            assert_close("fused add", &read(&g, &sum), &host(csum), 1e-6);
            assert_close(
                "fused add + rms_norm",
                &read(&g, &normed),
                &host(cnormed),
                1e-5,
            );
        }
    }

    /// Gemma's post-attention / post-MLP norm folded into the residual norm's pass gives the bits of the two passes
    /// it replaces, and the CPU's result within its bound.
    #[test]
    fn a_pre_normed_residual_equals_the_two_passes() {
        let Some(g) = backend() else { return };
        let c = CpuBackend::new();
        for (rows, cols) in [(3, 577), (1, 2048)] {
            let (x, r, rw, w) = (
                values(rows * cols, 31),
                values(rows * cols, 32),
                values(cols, 33),
                values(cols, 34),
            );
            let t = |v: &[f32]| g.tensor_from_host(v, rows, cols).unwrap();
            let (gx, gr, grw, gw) = (
                t(&x),
                t(&r),
                g.upload_vector(&rw).unwrap(),
                g.upload_vector(&w).unwrap(),
            );
            let (sum, normed, _) =
                super::add_rms_norm_with(&g, &gx, &gr, Some(&grw), &gw, 1e-6, None).unwrap();
            let (two_sum, two_normed) = g
                .add_rms_norm(&gx, &g.rms_norm(&gr, &grw, 1e-6).unwrap(), &gw, 1e-6)
                .unwrap();
            assert_close(
                "pre-normed sum vs two passes",
                &read(&g, &sum),
                &read(&g, &two_sum),
                0.0,
            );
            assert_close(
                "pre-normed norm vs two passes",
                &read(&g, &normed),
                &read(&g, &two_normed),
                0.0,
            );

            let ct = |v: &[f32]| {
                candle_core::Tensor::from_slice(v, (rows, cols), &candle_core::Device::Cpu).unwrap()
            };
            let (crw, cw) = (c.upload_vector(&rw).unwrap(), c.upload_vector(&w).unwrap());
            let (csum, cnormed) = c
                .add_rms_norm(
                    &ct(&x),
                    &c.rms_norm(&ct(&r), &crw, 1e-6).unwrap(),
                    &cw,
                    1e-6,
                )
                .unwrap();
            let host = |t| futures::executor::block_on(c.to_host(&t)).unwrap().concat();
            assert_close("pre-normed sum", &read(&g, &sum), &host(csum), 1e-5);
            assert_close("pre-normed norm", &read(&g, &normed), &host(cnormed), 1e-5);
        }
    }
}
