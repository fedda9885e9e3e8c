//! Rotary position embedding in both layouts (shaders/rope.wgsl).

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuRope, GpuTensor};
use crate::config::RopeLayout;
use crate::{Error, Result};

const SOURCE: &str = concat!(
    include_str!("../../../../shaders/rope_common.wgsl"),
    include_str!("../../../../shaders/rope.wgsl")
);

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    heads: u32,
    half: u32,
    start_pos: u32,
    theta_scale: f32,
    _pad: [u32; 3],
}

pub(crate) fn rope(
    b: &GpuBackend,
    x: &GpuTensor,
    rope: &GpuRope,
    heads: usize,
    start_pos: usize,
) -> Result<GpuTensor> {
    if heads == 0 || x.cols != heads * 2 * rope.half {
        return Err(Error::Backend(format!(
            "RoPE table for head size {} used on {} columns of {heads} heads",
            2 * rope.half,
            x.cols
        )));
    }
    if b.rec.ctx.exact {
        return super::rope_exact::rope(b, x, rope, heads, start_pos);
    }
    let adjacent = rope.layout == RopeLayout::Adjacent;
    let out = b.tensor(x.rows, x.cols);
    let kernel = b.rec.kernel(
        "rope",
        SOURCE,
        &[("ADJACENT", adjacent.to_string())],
        &[Access::Read, Access::Read, Access::ReadWrite],
    );
    let params = Params {
        rows: x.rows as u32,
        heads: heads as u32,
        half: rope.half as u32,
        start_pos: start_pos as u32,
        theta_scale: rope.theta_scale.unwrap_or(0.0),
        _pad: [0; 3],
    };
    let pairs = x.rows * heads * rope.half;
    b.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[x.buf(), &rope.inv_freq, out.buf()],
        grid(pairs.div_ceil(256) as u32),
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::CpuBackend;
    use crate::backend::gpu::testing::{assert_close, backend, read, values};
    use crate::backend::Backend;
    use crate::config::RopeLayout;

    #[test]
    fn rope_matches_the_cpu_in_both_layouts() {
        let Some(g) = backend() else { return };
        let c = CpuBackend::new();
        let (rows, heads, half) = (7, 3, 20);
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 10000f32.powf(-2.0 * i as f32 / (2 * half) as f32))
            .collect();
        let x = values(rows * heads * 2 * half, 3);
        for layout in [RopeLayout::Adjacent, RopeLayout::SplitHalves] {
            // Far positions check that angles stay accurate where pos·freq is large.
            for start in [0, 1000] {
                let gt = g.tensor_from_host(&x, rows, heads * 2 * half).unwrap();
                let got = read(
                    &g,
                    &g.rope(&gt, &g.rope_table(&inv_freq, layout).unwrap(), heads, start)
                        .unwrap(),
                );
                let cx = candle_core::Tensor::from_slice(
                    &x,
                    (rows, heads * 2 * half),
                    &candle_core::Device::Cpu,
                )
                .unwrap();
                let want = c
                    .rope(&cx, &c.rope_table(&inv_freq, layout).unwrap(), heads, start)
                    .unwrap();
                let want = futures::executor::block_on(c.to_host(&want))
                    .unwrap()
                    .concat();
                assert_close(&format!("rope {layout:?} at {start}"), &got, &want, 2e-4);
            }
        }
    }
}
