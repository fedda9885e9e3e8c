//! Exact products of the 32-value block types (shaders/matmul_exact.wgsl): with GpuOptions::exact, a product of a
//! Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0 weight by rounded activations equals the CPU backend's (ggml's AVX2 arithmetic)
//! bit for bit, in decode and prefill alike.

use super::matmul::{dtype_define, params};
use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor, GpuWeight};
use crate::quant::GgmlType;
use crate::{Error, Result};

const SOURCE: &str = concat!(
    include_str!("../../../shaders/exact.wgsl"),
    include_str!("../../../shaders/quant.wgsl"),
    include_str!("../../../shaders/matmul_exact.wgsl")
);

/// Weight rows per workgroup (WG · ROWS in matmul_exact.wgsl).
const WORKGROUP_ROWS: usize = 8 * 8;

/// Activation rows per invocation (ACTS in matmul_exact.wgsl). Prefill takes tiles of 4, each weight block unpacked
/// once for 4 rows: 1.3 to 1.8 times faster than 1 on lavapipe at 64 rows. Decode takes 1, as a tile would only
/// repeat the row (2 to 3 times slower there).
fn acts(rows: usize) -> usize {
    if rows >= 4 {
        4
    } else {
        1
    }
}

/// Whether matmul_exact.wgsl multiplies weights of `dtype`.
pub(crate) fn supports(dtype: GgmlType) -> bool {
    matches!(
        dtype,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0
    )
}

/// out [x.rows, w.rows] = x · Wᵀ as the CPU backend forms it. `x` holds the activations already rounded to Q8_0 /
/// Q8_1 (activation_rounding.rs, dense); `sums` is Q8_1's per-block delta, required for Q4_1 / Q5_1.
pub(crate) fn matmul_exact(
    b: &GpuBackend,
    x: &GpuTensor,
    w: &GpuWeight,
    sums: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    if x.cols != w.cols || !w.cols.is_multiple_of(32) {
        return Err(Error::Backend(format!(
            "exact matmul of activations with {} columns by a {} weight with {} columns",
            x.cols,
            w.dtype.name(),
            w.cols
        )));
    }
    let q8_1 = matches!(w.dtype, GgmlType::Q4_1 | GgmlType::Q5_1);
    if q8_1 && sums.is_none() {
        return Err(Error::Backend(format!(
            "an exact {} product needs the activations' Q8_1 sums",
            w.dtype.name()
        )));
    }
    let out = b.tensor(x.rows, w.rows);
    if x.rows == 0 {
        return Ok(out);
    }
    // llama.cpp repacks Q4_0 weights whose row count is a multiple of 8 and then sums the block's lanes before
    // scaling (backend/cpu/qmatmul.rs). The CPU backend decides per weight; a packed projection (q | k | v in one
    // weight) is decided here by its total rows. That is the CPU's choice for every part when each part's row
    // count is a multiple of 8; otherwise some part may get the other formula and differ in its last bits.
    let repacked = w.dtype == GgmlType::Q4_0 && w.rows.is_multiple_of(8);
    let defines = [
        dtype_define(w.dtype),
        ("REPACKED", format!("{}u", repacked as u32)),
        ("ACTS", format!("{}u", acts(x.rows))),
    ];
    let kernel = b.rec.kernel(
        "matmul_exact",
        SOURCE,
        &defines,
        &[Access::Read, Access::Read, Access::ReadWrite, Access::Read],
    );
    // Without sums the kernel never reads binding 4; x stands in for it.
    let sums = sums.unwrap_or(x);
    for chunk in &w.chunks {
        let [gx, gy, _] = grid(chunk.rows.div_ceil(WORKGROUP_ROWS) as u32);
        let p = params(w, x.rows, chunk);
        b.rec.dispatch(
            &kernel,
            bytemuck::bytes_of(&p),
            &[&chunk.buf, x.buf(), out.buf(), sums.buf()],
            [gx, gy, x.rows.div_ceil(acts(x.rows)) as u32],
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::q8;
    use crate::backend::cpu::qmatmul::QMatrix;
    use crate::backend::gpu::activation_rounding::round_for;
    use crate::backend::gpu::matmul::tests::weight_bytes;
    use crate::backend::gpu::testing::{
        assert_same_bits, backend_with, exact_backend, read, values,
    };
    use crate::backend::gpu::{GpuBackend, GpuOptions};
    use crate::backend::Backend;
    use crate::quant::GgmlType;

    const TYPES: [GgmlType; 5] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
    ];

    /// Activations [rows, cols] in [-1, 1), with blocks that stress the rounding: all zeros, tiny (d16 an f16
    /// subnormal) and large.
    fn activations(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut x = values(rows * cols, seed);
        for (i, block) in x.chunks_exact_mut(32).enumerate() {
            let scale = match (i + seed as usize) % 7 {
                0 => 0.0,
                3 => 1e-4,
                5 => 300.0,
                _ => 1.0,
            };
            block.iter_mut().for_each(|v| *v *= scale);
        }
        x
    }

    /// The backend's product (activations rounded, then the exact kernel) against the CPU backend's on the same f32
    /// activations.
    fn check(
        g: &GpuBackend,
        dtype: GgmlType,
        w_rows: usize,
        cols: usize,
        x_rows: usize,
        seed: u64,
    ) {
        let what = format!("{} [{x_rows}, {cols}] x [{w_rows}, {cols}]", dtype.name());
        let bytes = weight_bytes(dtype, w_rows, cols, seed);
        let x = activations(x_rows, cols, seed + 7);
        let want = QMatrix::new(dtype, w_rows, cols, bytes.clone())
            .unwrap()
            .matmul(&x, x_rows)
            .unwrap();
        let gw = g.upload_weight("w", dtype, [w_rows, cols], &bytes).unwrap();
        let gx = g.tensor_from_host(&x, x_rows, cols).unwrap();
        let got = read(g, &g.matmul(&gx, &gw).unwrap());
        assert_same_bits(&what, &got, &want);
    }

    #[test]
    fn exact_matmul_matches_the_cpu_bit_for_bit() {
        let Some(g) = exact_backend() else { return };
        let mut cases = 0;
        for (k, dtype) in TYPES.into_iter().enumerate() {
            // 13 and 16 rows: Q4_0 as llama.cpp runs it plain and repacked (as are 1, 3, 37, 130 and 40).
            for w_rows in [1, 3, 13, 16, 37, 40, 130] {
                for cols in [32, 96, 576] {
                    for x_rows in [1, 2, 9] {
                        let seed =
                            1000 * k as u64 + 10 * w_rows as u64 + cols as u64 + x_rows as u64;
                        check(&g, dtype, w_rows, cols, x_rows, seed);
                        cases += 1;
                    }
                }
            }
        }
        eprintln!("{cases} products equal the CPU's bit for bit");
    }

    #[test]
    fn exact_matmul_over_weights_split_into_chunks() {
        let Some(g) = backend_with(GpuOptions {
            exact: true,
            max_binding_bytes: Some(4096),
            ..Default::default()
        }) else {
            return;
        };
        for (k, dtype) in TYPES.into_iter().enumerate() {
            let (w_rows, cols) = (301, 160);
            let w = g
                .upload_weight(
                    "w",
                    dtype,
                    [w_rows, cols],
                    &weight_bytes(dtype, w_rows, cols, 1),
                )
                .unwrap();
            assert!(
                w.chunks.len() > 1,
                "{}: {} chunk(s)",
                dtype.name(),
                w.chunks.len()
            );
            for x_rows in [1, 9] {
                check(
                    &g,
                    dtype,
                    w_rows,
                    cols,
                    x_rows,
                    500 + 10 * k as u64 + x_rows as u64,
                );
            }
        }
    }

    /// What the kernel rebuilds from the rounded activations (d16 = f16(max |x'| / 127), q = round(x' / d16),
    /// s = delta + d16 · Σq) is the CPU quantiser's block, bit for bit.
    #[test]
    fn rounded_activations_give_back_the_cpu_blocks() {
        let Some(g) = exact_backend() else { return };
        let (rows, cols) = (3, 576);
        let x = activations(rows, cols, 3);
        let gx = g.tensor_from_host(&x, rows, cols).unwrap();
        let rebuild = |block: &[f32]| {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = half::f16::from_f32(amax / 127.0).to_f32();
            let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
            let q: Vec<i8> = block
                .iter()
                .map(|v| (v * inv).round_ties_even() as i8)
                .collect();
            (d, q)
        };
        for dtype in [GgmlType::Q4_0, GgmlType::Q4_1] {
            let (rounded, sums) = round_for(&g, &gx, dtype).unwrap();
            let rounded = read(&g, &rounded);
            let blocks = rounded.chunks_exact(32).map(rebuild);
            if dtype == GgmlType::Q4_0 {
                let mut want = vec![q8::BlockQ8_0::default(); x.len() / 32];
                q8::quantize_q8_0(&x, &mut want);
                for (i, ((d, q), w)) in blocks.zip(&want).enumerate() {
                    assert_eq!(
                        (d.to_bits(), &q[..]),
                        (w.d.to_bits(), &w.qs[..]),
                        "Q8_0 block {i}"
                    );
                }
            } else {
                let mut want = vec![q8::BlockQ8_1::default(); x.len() / 32];
                q8::quantize_q8_1(&x, &mut want);
                let delta = read(&g, &sums.expect("Q8_1 sums"));
                for (i, ((d, q), w)) in blocks.zip(&want).enumerate() {
                    let sum: i32 = q.iter().map(|&v| v as i32).sum();
                    let s = delta[i] + d * sum as f32;
                    assert_eq!(
                        (d.to_bits(), &q[..], s.to_bits()),
                        (w.d.to_bits(), &w.qs[..], w.s.to_bits()),
                        "Q8_1 block {i}"
                    );
                }
            }
        }
    }
}
