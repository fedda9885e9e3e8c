//! Matrix products and embedding gathers over weights in their file layout (shaders/quant.wgsl dequantises; it is
//! prepended to shaders/matvec.wgsl for decode, shaders/matmat.wgsl for prefill and shaders/embed.wgsl).
//!
//! Every kernel runs once per weight chunk: a chunk's buffer starts at its first row, and the kernel writes the
//! output columns (or gathers the ids) of that chunk's rows only.

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor, GpuWeight, WeightChunk};
use crate::quant::GgmlType;
use crate::{Error, Result};

const MATVEC: &str = concat!(
    include_str!("../../../../shaders/quant.wgsl"),
    include_str!("../../../../shaders/matvec.wgsl")
);
const MATVEC_ROWS: &str = concat!(
    include_str!("../../../../shaders/quant.wgsl"),
    include_str!("../../../../shaders/matvec_rows.wgsl")
);
const MATMAT: &str = concat!(
    include_str!("../../../../shaders/quant.wgsl"),
    include_str!("../../../../shaders/matmat.wgsl")
);
const MATMAT_ROWS: &str = concat!(
    include_str!("../../../../shaders/quant.wgsl"),
    include_str!("../../../../shaders/matmat_rows.wgsl")
);
const EMBED: &str = concat!(
    include_str!("../../../../shaders/quant.wgsl"),
    include_str!("../../../../shaders/embed.wgsl")
);

/// Values per unit, the step every kernel walks a row in (quant.wgsl).
const UNIT: usize = 32;
/// Weight rows per matvec workgroup (ROWS in matvec.wgsl; WG · ROWS in matvec_rows.wgsl).
const MATVEC_WORKGROUP_ROWS: usize = 4;
const MATVEC_ROWS_WORKGROUP_ROWS: usize = 8 * 16;
/// Weight rows and activation rows per matmat workgroup (TM and TN in matmat.wgsl).
const TILE_ROWS: usize = 64;
const TILE_ACTS: usize = 32;
/// The same for matmat_rows.wgsl (WG · ROWS and ACTS there).
const ROWS_TILE_ROWS: usize = 8 * 16;
const ROWS_TILE_ACTS: usize = 8;
/// Invocations per embed workgroup.
const EMBED_WORKGROUP: usize = 256;

/// Uniforms of all three kernels and matmul_exact.wgsl (`Params` in quant.wgsl).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct Params {
    rows: u32,
    cols: u32,
    chunk_rows: u32,
    first_row: u32,
    out_stride: u32,
    row_bytes: u32,
    units: u32,
    ids_offset: u32,
    scale: f32,
    _pad: [u32; 3],
}

impl Params {
    /// matmul_exact_k.wgsl: activation rows below `rows` take the repacked Q4_K gemm formula (Params.pad1).
    pub(super) fn with_gemm_rows(mut self, rows: usize) -> Self {
        self._pad[1] = rows as u32;
        self
    }
}

/// The `DTYPE` a kernel is specialised for: the ggml type id, which quant.wgsl names.
pub(super) fn dtype_define(dtype: GgmlType) -> (&'static str, String) {
    // Every type the loader knows is dequantised in quant.wgsl; a new GgmlType must be added there too.
    let id = match dtype {
        GgmlType::F32
        | GgmlType::F16
        | GgmlType::BF16
        | GgmlType::Q4_0
        | GgmlType::Q4_1
        | GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::Q8_0
        | GgmlType::Q4K
        | GgmlType::Q5K
        | GgmlType::Q6K => dtype.id(),
    };
    ("DTYPE", format!("{id}u"))
}

pub(super) fn params(w: &GpuWeight, rows: usize, chunk: &WeightChunk) -> Params {
    Params {
        rows: rows as u32,
        cols: w.cols as u32,
        chunk_rows: chunk.rows as u32,
        first_row: chunk.first_row as u32,
        out_stride: w.rows as u32,
        row_bytes: w.row_bytes as u32,
        units: w.cols.div_ceil(UNIT) as u32,
        ids_offset: 0,
        scale: 1.0,
        _pad: [0; 3],
    }
}

/// How a product splits its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProductStrategy {
    /// Workgroups share loads through workgroup memory and reduce there (real GPUs): matvec.wgsl, matmat.wgsl.
    Cooperative,
    /// Each invocation owns whole weight rows (16, × 8 activation rows in prefill) and shares nothing
    /// (CPU-emulated adapters, where every load is costly): matvec_rows.wgsl, matmat_rows.wgsl.
    RowsPerInvocation,
}

impl ProductStrategy {
    pub(crate) fn for_backend(b: &GpuBackend) -> Self {
        if b.rec.ctx.cpu_emulated {
            Self::RowsPerInvocation
        } else {
            Self::Cooperative
        }
    }
}

/// out [x.rows, w.rows] = x [x.rows, w.cols] · Wᵀ.
pub(crate) fn matmul(b: &GpuBackend, x: &GpuTensor, w: &GpuWeight) -> Result<GpuTensor> {
    matmul_with(b, x, w, None, ProductStrategy::for_backend(b))
}

/// `matmul`, plus Σ_u m[o, u] · sums[u] per output o when `sums` (one value per 32-value unit) is given: ggml's
/// Q8_1 block-sum term of Q4_1 / Q5_1 products, added inside the product except by matmat.wgsl (a second pass).
/// On the exact path the 32-value block types go to matmul_exact.rs whatever the strategy.
pub(crate) fn matmul_with(
    b: &GpuBackend,
    x: &GpuTensor,
    w: &GpuWeight,
    sums: Option<&GpuTensor>,
    strategy: ProductStrategy,
) -> Result<GpuTensor> {
    if b.rec.ctx.exact && super::matmul_exact::supports(w.dtype) {
        return super::matmul_exact::matmul_exact(b, x, w, sums);
    }
    if x.cols != w.cols {
        return Err(Error::Backend(format!(
            "matmul of activations with {} columns by a weight with {} columns",
            x.cols, w.cols
        )));
    }
    let out = b.tensor(x.rows, w.rows);
    if x.rows == 1 {
        let (name, source, rows_per_group) = match strategy {
            ProductStrategy::Cooperative => ("matvec", MATVEC, MATVEC_WORKGROUP_ROWS),
            ProductStrategy::RowsPerInvocation => {
                ("matvec_rows", MATVEC_ROWS, MATVEC_ROWS_WORKGROUP_ROWS)
            }
        };
        let defines = [
            dtype_define(w.dtype),
            ("SUMS", format!("{}u", sums.is_some() as u32)),
        ];
        let access = [Access::Read, Access::Read, Access::ReadWrite, Access::Read];
        let kernel = b.rec.kernel(name, source, &defines, &access);
        // Without sums the kernel never reads binding 4; x stands in for it.
        let sums = sums.unwrap_or(x);
        for chunk in &w.chunks {
            let p = params(w, x.rows, chunk);
            let groups = grid(chunk.rows.div_ceil(rows_per_group) as u32);
            b.rec.dispatch(
                &kernel,
                bytemuck::bytes_of(&p),
                &[&chunk.buf, x.buf(), out.buf(), sums.buf()],
                groups,
            )?;
        }
        return Ok(out);
    }
    let (name, source, tile_rows, tile_acts) = match strategy {
        ProductStrategy::Cooperative => ("matmat", MATMAT, TILE_ROWS, TILE_ACTS),
        ProductStrategy::RowsPerInvocation => {
            ("matmat_rows", MATMAT_ROWS, ROWS_TILE_ROWS, ROWS_TILE_ACTS)
        }
    };
    // matmat_rows.wgsl adds the sums itself; matmat.wgsl leaves them to a second pass.
    let inline_sums = sums.filter(|_| strategy == ProductStrategy::RowsPerInvocation);
    let (defines, access) = if strategy == ProductStrategy::RowsPerInvocation {
        (
            vec![
                dtype_define(w.dtype),
                ("SUMS", format!("{}u", inline_sums.is_some() as u32)),
            ],
            vec![Access::Read, Access::Read, Access::ReadWrite, Access::Read],
        )
    } else {
        (
            vec![dtype_define(w.dtype)],
            vec![Access::Read, Access::Read, Access::ReadWrite],
        )
    };
    let kernel = b.rec.kernel(name, source, &defines, &access);
    for chunk in &w.chunks {
        let [gx, gy, _] = grid(chunk.rows.div_ceil(tile_rows) as u32);
        let groups = [gx, gy, x.rows.div_ceil(tile_acts) as u32];
        let p = params(w, x.rows, chunk);
        let mut bindings = vec![&chunk.buf, x.buf(), out.buf()];
        if strategy == ProductStrategy::RowsPerInvocation {
            bindings.push(inline_sums.unwrap_or(x).buf());
        }
        b.rec
            .dispatch(&kernel, bytemuck::bytes_of(&p), &bindings, groups)?;
    }
    if let (Some(sums), None) = (sums, inline_sums) {
        super::activation_rounding::add_q8_1_sums(b, w, sums, &out)?;
    }
    Ok(out)
}

/// out [ids.len(), w.cols] = rows `ids` of W · scale. The ids were checked against w.rows by the caller.
pub(crate) fn embed(b: &GpuBackend, w: &GpuWeight, ids: &[u32], scale: f32) -> Result<GpuTensor> {
    let out = b.tensor(ids.len(), w.cols);
    if ids.is_empty() || w.cols == 0 {
        return Ok(out);
    }
    let (ids_buf, ids_offset) = b.rec.upload_u32(ids)?;
    let kernel = b.rec.kernel(
        "embed",
        EMBED,
        &[dtype_define(w.dtype)],
        &[Access::Read, Access::Read, Access::ReadWrite],
    );
    let invocations = ids.len() * w.cols.div_ceil(UNIT) * 4;
    for chunk in &w.chunks {
        let p = Params {
            ids_offset,
            scale,
            ..params(w, ids.len(), chunk)
        };
        let groups = grid(invocations.div_ceil(EMBED_WORKGROUP) as u32);
        b.rec.dispatch(
            &kernel,
            bytemuck::bytes_of(&p),
            &[&chunk.buf, &ids_buf, out.buf()],
            groups,
        )?;
    }
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::ProductStrategy;
    use crate::backend::cpu::CpuBackend;
    use crate::backend::gpu::activation_rounding::q8_1_matmul_with;
    use crate::backend::gpu::testing::{assert_close, backend, backend_with, read, values};
    use crate::backend::gpu::{GpuBackend, GpuOptions};
    use crate::backend::Backend;
    use crate::quant::{dequantize_to_vec, GgmlType};

    const ALL: [GgmlType; 11] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];

    /// Byte offsets of the f16 scale fields (d, m, dmin) within a block.
    fn f16_fields(dtype: GgmlType) -> &'static [usize] {
        match dtype {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
            GgmlType::Q6K => &[208],
            _ => &[],
        }
    }

    /// A [rows, cols] weight of `dtype` in file layout: random quants with small finite scales, or random floats.
    pub(crate) fn weight_bytes(dtype: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
        let n = rows * cols;
        let v = values(n, seed);
        match dtype {
            GgmlType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            GgmlType::F16 => v
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect(),
            GgmlType::BF16 => v
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect(),
            _ => {
                let len = dtype.byte_len(n as u64).expect("whole blocks") as usize;
                let mut s = seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
                let mut bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        (s >> 32) as u8
                    })
                    .collect();
                let scales = values(len / dtype.type_size() * 2, seed + 1);
                for (block, sc) in bytes
                    .chunks_exact_mut(dtype.type_size())
                    .zip(scales.chunks_exact(2))
                {
                    for (&at, &d) in f16_fields(dtype).iter().zip(sc) {
                        block[at..at + 2]
                            .copy_from_slice(&half::f16::from_f32(d * 0.05).to_le_bytes());
                    }
                }
                bytes
            }
        }
    }

    /// x · Wᵀ from the reference dequantisation, accumulated in f64.
    fn exact(dtype: GgmlType, bytes: &[u8], w_rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        let w = dequantize_to_vec(dtype, bytes, w_rows * cols).unwrap();
        x.chunks(cols)
            .flat_map(|xr| {
                w.chunks(cols)
                    .map(|wr| {
                        xr.iter()
                            .zip(wr)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>() as f32
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn cpu_host(c: &CpuBackend, t: candle_core::Tensor) -> Vec<f32> {
        futures::executor::block_on(c.to_host(&t)).unwrap().concat()
    }

    /// Runs x [x_rows, cols] · Wᵀ [w_rows, cols] on the GPU: the kernel against the exact product, and the backend's
    /// matmul (which first rounds activations to Q8 / F16 / BF16 as ggml does) against the CPU backend, which rounds
    /// the same way.
    fn check_matmul(
        g: &GpuBackend,
        dtype: GgmlType,
        w_rows: usize,
        cols: usize,
        x_rows: usize,
        seed: u64,
    ) {
        let what = format!("{} [{x_rows}, {cols}] x [{w_rows}, {cols}]", dtype.name());
        let bytes = weight_bytes(dtype, w_rows, cols, seed);
        let x = values(x_rows * cols, seed + 7);
        let gw = g.upload_weight("w", dtype, [w_rows, cols], &bytes).unwrap();
        let gx = g.tensor_from_host(&x, x_rows, cols).unwrap();
        let tol = if dtype == GgmlType::F32 { 1e-5 } else { 1e-4 };
        let want = exact(dtype, &bytes, w_rows, cols, &x);
        // Each product has a kernel for real GPUs and one for CPU-emulated adapters: the test adapter runs both.
        for kernel in [
            ProductStrategy::Cooperative,
            ProductStrategy::RowsPerInvocation,
        ] {
            let got = read(g, &super::matmul_with(g, &gx, &gw, None, kernel).unwrap());
            assert_close(&format!("{what} ({kernel:?})"), &got, &want, tol);
        }

        let c = CpuBackend::new();
        let cw = c.upload_weight("w", dtype, [w_rows, cols], &bytes).unwrap();
        let cx =
            candle_core::Tensor::from_slice(&x, (x_rows, cols), &candle_core::Device::Cpu).unwrap();
        let want = cpu_host(&c, c.matmul(&cx, &cw).unwrap());
        let got = read(g, &g.matmul(&gx, &gw).unwrap());
        assert_close(
            &format!("{what} (rounded like the CPU backend)"),
            &got,
            &want,
            1e-5,
        );
        // Q8_1's block-sum term, added inside either decode kernel and after either prefill kernel.
        if matches!(dtype, GgmlType::Q4_1 | GgmlType::Q5_1) {
            for kernel in [
                ProductStrategy::Cooperative,
                ProductStrategy::RowsPerInvocation,
            ] {
                let out = q8_1_matmul_with(g, &Default::default(), &gx, &gw, kernel)
                    .unwrap()
                    .expect("a Q8_1 product");
                assert_close(
                    &format!("{what} (Q8_1 sums, {kernel:?})"),
                    &read(g, &out),
                    &want,
                    1e-5,
                );
            }
        }
    }

    /// Columns for each type: whole blocks, and for floats an odd count (F16/BF16 rows then start mid-word and the
    /// last unit is short).
    fn shapes(dtype: GgmlType) -> [(usize, usize); 2] {
        match dtype.block_size() {
            256 => [(37, 512), (301, 512)],
            32 => [(37, 96), (301, 160)],
            _ => [(37, 37), (301, 160)],
        }
    }

    #[test]
    fn matmul_matches_the_reference_for_every_type() {
        let Some(g) = backend() else { return };
        for (k, dtype) in ALL.into_iter().enumerate() {
            for (w_rows, cols) in shapes(dtype) {
                for x_rows in [1, 5, 67] {
                    check_matmul(
                        &g,
                        dtype,
                        w_rows,
                        cols,
                        x_rows,
                        100 * k as u64 + x_rows as u64,
                    );
                }
            }
        }
    }

    #[test]
    fn matmul_over_weights_split_into_chunks() {
        let Some(g) = backend_with(GpuOptions {
            max_binding_bytes: Some(4096),
            ..Default::default()
        }) else {
            return;
        };
        for (k, dtype) in ALL.into_iter().enumerate() {
            let (w_rows, cols) = shapes(dtype)[1];
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
            for x_rows in [1, 67] {
                check_matmul(
                    &g,
                    dtype,
                    w_rows,
                    cols,
                    x_rows,
                    1000 + 10 * k as u64 + x_rows as u64,
                );
            }
        }
    }

    fn check_embed(g: &GpuBackend, dtype: GgmlType, rows: usize, cols: usize, seed: u64) {
        let bytes = weight_bytes(dtype, rows, cols, seed);
        let ids = [0, rows as u32 - 1, 5, 5, rows as u32 / 2, 17, 0];
        let gw = g
            .upload_weight("table", dtype, [rows, cols], &bytes)
            .unwrap();
        let got = read(g, &g.embed(&gw, &ids, Some(1.75)).unwrap());
        let c = CpuBackend::new();
        let cw = c
            .upload_weight("table", dtype, [rows, cols], &bytes)
            .unwrap();
        let want = cpu_host(&c, c.embed(&cw, &ids, Some(1.75)).unwrap());
        assert_close(
            &format!("embed {} [{rows}, {cols}]", dtype.name()),
            &got,
            &want,
            1e-6,
        );
    }

    #[test]
    fn embed_matches_the_cpu_for_every_type() {
        let Some(g) = backend() else { return };
        for (k, dtype) in ALL.into_iter().enumerate() {
            for (rows, cols) in shapes(dtype) {
                check_embed(&g, dtype, rows, cols, 50 + k as u64);
            }
        }
    }

    #[test]
    fn embed_over_tables_split_into_chunks() {
        let Some(g) = backend_with(GpuOptions {
            max_binding_bytes: Some(4096),
            ..Default::default()
        }) else {
            return;
        };
        for (k, dtype) in ALL.into_iter().enumerate() {
            let (rows, cols) = shapes(dtype)[1];
            check_embed(&g, dtype, rows, cols, 70 + k as u64);
        }
    }
}
