//! Exact products of the 32-value block types (shaders/matmul_exact.wgsl) and of the K-quants Q4_K, Q5_K, Q6_K
//! (shaders/matmul_exact_k.wgsl): with GpuOptions::exact, a product of such a weight by rounded activations equals
//! the CPU backend's (ggml's AVX2 arithmetic) bit for bit, in decode and prefill alike.

use super::matmul::{dtype_define, params};
use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor, GpuWeight};
use crate::quant::GgmlType;
use crate::{Error, Result};

const SOURCE: &str = concat!(
    include_str!("../../../../shaders/exact.wgsl"),
    include_str!("../../../../shaders/quant.wgsl"),
    include_str!("../../../../shaders/matmul_exact.wgsl")
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

const SOURCE_K: &str = concat!(
    include_str!("../../../../shaders/exact.wgsl"),
    include_str!("../../../../shaders/quant.wgsl"),
    include_str!("../../../../shaders/matmul_exact_k.wgsl")
);

/// Weight rows per workgroup (WG · ROWS in matmul_exact_k.wgsl).
const WORKGROUP_ROWS_K: usize = 8 * 4;

/// Whether matmul_exact_k.wgsl multiplies weights of `dtype`.
pub(crate) fn supports_k(dtype: GgmlType) -> bool {
    matches!(dtype, GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K)
}

/// The ggml kernel whose float formula a K-quant product follows, as the CPU backend picks it
/// (backend/cpu/qmatmul.rs): matmul_exact_k.wgsl's PATH, and the activation rows that take the repacked Q4_K gemm.
/// llama.cpp repacks Q4_K weights whose row count is a multiple of 8 (for a packed projection, decided here by its
/// total rows, as for Q4_0 above); their gemm takes a batch's rows in whole groups of 4 when there are more than 3,
/// the gemv the rest. Otherwise 8 or more rows take the tiled matmul, fewer ggml_vec_dot.
fn k_path(dtype: GgmlType, w_rows: usize, m: usize) -> (u32, usize) {
    if dtype == GgmlType::Q4K && w_rows.is_multiple_of(8) {
        (2, if m > 3 { m - m % 4 } else { 0 })
    } else if m >= 8 {
        (1, 0)
    } else {
        (0, 0)
    }
}

/// out [x.rows, w.rows] = x · Wᵀ as the CPU backend forms it, for Q4_K, Q5_K and Q6_K weights. `x` holds the
/// activations rounded to Q8_K (activation_rounding.rs, round_block.wgsl mode 2) and `d` [x.rows, cols / 256] each
/// block's d, from which the kernel rebuilds the Q8_K blocks.
pub(crate) fn matmul_exact_k(
    b: &GpuBackend,
    x: &GpuTensor,
    w: &GpuWeight,
    d: &GpuTensor,
) -> Result<GpuTensor> {
    if !supports_k(w.dtype)
        || x.cols != w.cols
        || !w.cols.is_multiple_of(256)
        || d.len() != x.rows * (x.cols / 256)
    {
        return Err(Error::Backend(format!(
            "exact matmul of activations [{}, {}] (with {} block scales) by a {} weight with {} columns",
            x.rows,
            x.cols,
            d.len(),
            w.dtype.name(),
            w.cols
        )));
    }
    let out = b.tensor(x.rows, w.rows);
    if x.rows == 0 {
        return Ok(out);
    }
    let (path, gemm_rows) = k_path(w.dtype, w.rows, x.rows);
    let defines = [
        dtype_define(w.dtype),
        ("PATH", format!("{path}u")),
        ("ACTS", format!("{}u", acts(x.rows))),
    ];
    let kernel = b.rec.kernel(
        "matmul_exact_k",
        SOURCE_K,
        &defines,
        &[Access::Read, Access::Read, Access::ReadWrite, Access::Read],
    );
    for chunk in &w.chunks {
        let [gx, gy, _] = grid(chunk.rows.div_ceil(WORKGROUP_ROWS_K) as u32);
        let p = params(w, x.rows, chunk).with_gemm_rows(gemm_rows);
        b.rec.dispatch(
            &kernel,
            bytemuck::bytes_of(&p),
            &[&chunk.buf, x.buf(), out.buf(), d.buf()],
            [gx, gy, x.rows.div_ceil(acts(x.rows)) as u32],
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::supports_k;
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

    /// The backend's product (activations rounded, with the K-quants' d, then the exact kernel) against the CPU
    /// backend's on the same f32 activations.
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
        let x = if supports_k(dtype) {
            activations_k(x_rows, cols, seed + 7)
        } else {
            activations(x_rows, cols, seed + 7)
        };
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
            check_split(&g, dtype, 301, 160, 500 + 10 * k as u64);
        }
    }

    /// `check` on a weight the backend splits into several buffers (the caller forces a small binding limit), for
    /// one and nine activation rows.
    fn check_split(g: &GpuBackend, dtype: GgmlType, w_rows: usize, cols: usize, seed: u64) {
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
            check(g, dtype, w_rows, cols, x_rows, seed + x_rows as u64);
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

    const K_TYPES: [GgmlType; 3] = [GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q5K];

    /// Activations [rows, cols] for the K-quants: as `activations`, and whole 256-value blocks all zero (d = 0),
    /// tiny or large.
    fn activations_k(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut x = activations(rows, cols, seed);
        for (i, block) in x.chunks_exact_mut(256).enumerate() {
            let scale = match (i + seed as usize) % 5 {
                1 => 0.0,
                3 => 1e-5,
                4 => 70.0,
                _ => 1.0,
            };
            block.iter_mut().for_each(|v| *v *= scale);
        }
        x
    }

    /// Every K-quant on every formula the CPU picks: Vec (1 to 5 rows), Tiled (8 or more), and for Q4_K weights
    /// with a multiple of 8 rows Repacked (1 to 3) and RepackedGemm with and without leftover rows (4, 5, 8, 9, 13).
    #[test]
    fn exact_k_matmul_matches_the_cpu_bit_for_bit() {
        let Some(g) = exact_backend() else { return };
        let mut cases = 0;
        for (k, dtype) in K_TYPES.into_iter().enumerate() {
            for w_rows in [8, 16, 13, 40] {
                for cols in [256, 512, 1024] {
                    for x_rows in [1, 2, 3, 4, 5, 8, 9, 13] {
                        let seed =
                            1000 * k as u64 + 10 * w_rows as u64 + cols as u64 + x_rows as u64;
                        check(&g, dtype, w_rows, cols, x_rows, seed);
                        cases += 1;
                    }
                }
            }
        }
        eprintln!("{cases} K-quant products equal the CPU's bit for bit");
    }

    #[test]
    fn exact_k_matmul_over_weights_split_into_chunks() {
        let Some(g) = backend_with(GpuOptions {
            exact: true,
            max_binding_bytes: Some(8192),
            ..Default::default()
        }) else {
            return;
        };
        for (k, dtype) in K_TYPES.into_iter().enumerate() {
            for (w_rows, cols) in [(101, 512), (96, 512)] {
                check_split(&g, dtype, w_rows, cols, 700 + 10 * k as u64);
            }
        }
    }

    /// Q8_K blocks rebuilt as matmul_exact_k.wgsl rebuilds them (q = round(x' / d), 0 where d = 0; bsums from q)
    /// from every producer of a mode-2 rounding on the exact path (round_for, the fused norm, the fused gated
    /// activation) equal the CPU quantiser's, bit for bit; and a product reading the norm's fused rounding from the
    /// memo equals the CPU's.
    #[test]
    fn q8_k_blocks_rebuilt_from_every_rounding_equal_the_cpu_blocks() {
        use crate::backend::gpu::activation_rounding::{mode_for, Q8_K};
        use crate::backend::gpu::{elementwise, norm};
        use crate::config::Activation;
        let Some(g) = exact_backend() else { return };
        let (rows, cols) = (3, 1024);
        let compare = |what: &str, source: &[f32], rounded: &[f32], d: &[f32]| {
            let mut want = vec![q8::BlockQ8K::default(); source.len() / 256];
            q8::quantize_q8_k(source, &mut want);
            assert_eq!(d.len(), want.len(), "{what}: blocks");
            for (i, (block, w)) in rounded.chunks_exact(256).zip(&want).enumerate() {
                let q: Vec<i8> = block
                    .iter()
                    .map(|&v| {
                        if d[i] == 0.0 {
                            0
                        } else {
                            (v / d[i]).round_ties_even() as i8
                        }
                    })
                    .collect();
                let bsums: Vec<i16> = q
                    .chunks_exact(16)
                    .map(|c| c.iter().map(|&v| v as i16).sum())
                    .collect();
                assert_eq!(
                    (d[i].to_bits(), &q[..], &bsums[..]),
                    (w.d.to_bits(), &w.qs[..], &w.bsums[..]),
                    "{what}: Q8_K block {i}"
                );
            }
        };
        let x = activations_k(rows, cols, 5);
        let gx = g.tensor_from_host(&x, rows, cols).unwrap();
        let (rounded, d) = round_for(&g, &gx, GgmlType::Q4K).unwrap();
        compare(
            "round_for",
            &x,
            &read(&g, &rounded),
            &read(&g, &d.expect("Q8_K d")),
        );

        let r = values(rows * cols, 6);
        let nw = values(cols, 7);
        let (gr, gnw) = (
            g.tensor_from_host(&r, rows, cols).unwrap(),
            g.upload_vector(&nw).unwrap(),
        );
        let mode = mode_for(GgmlType::Q6K, cols);
        assert_eq!(mode, Some(Q8_K));
        let (_, normed, fused) =
            norm::add_rms_norm_with(&g, &gx, &gr, None, &gnw, 1e-6, mode).unwrap();
        let (rounded, d) = fused.expect("a rounding");
        let normed_host = read(&g, &normed);
        compare(
            "add_rms_norm",
            &normed_host,
            &read(&g, &rounded),
            &read(&g, &d.expect("Q8_K d")),
        );

        for act in [Activation::Silu, Activation::GeluTanhF16Table] {
            let (out, rounded, d) = elementwise::gated_round(&g, &gx, &gr, act, Q8_K).unwrap();
            compare(
                &format!("{act:?}"),
                &read(&g, &out),
                &read(&g, &rounded),
                &read(&g, &d.expect("Q8_K d")),
            );
        }

        // The backend's fused norm, then products that take its rounding from the memo.
        for dtype in K_TYPES {
            let (w_rows, seed) = (40, 9);
            let bytes = weight_bytes(dtype, w_rows, cols, seed);
            let gw = g.upload_weight("w", dtype, [w_rows, cols], &bytes).unwrap();
            let (_, normed) = g.add_rms_norm_for(&gx, &gr, None, &gnw, 1e-6, &gw).unwrap();
            let normed_host = read(&g, &normed);
            let want = QMatrix::new(dtype, w_rows, cols, bytes)
                .unwrap()
                .matmul(&normed_host, rows)
                .unwrap();
            let got = read(&g, &g.matmul(&normed, &gw).unwrap());
            assert_same_bits(
                &format!("{} after the fused norm", dtype.name()),
                &got,
                &want,
            );
        }
    }
}
