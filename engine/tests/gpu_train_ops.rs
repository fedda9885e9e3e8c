//! Every training op of the GPU backend against its CPU twin (the CPU backend's `TrainBackend`, itself checked
//! against finite differences and PyTorch), on shapes that straddle the kernels' workgroups (rows 1, 3, 17, 70;
//! widths 7, 64, 65, 257) and on column windows of packed products. Each check prints its worst error relative to
//! the reference's largest |value| and names the first index past the bound. Last, a whole training pass with
//! adapters on some projections only, whose undecorated outputs stay windows. Skipped without a GPU adapter (a
//! failure under CI=true).
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use engine::backend::cpu::CpuBackend;
use engine::backend::gpu::{GpuBackend, GpuOptions};
use engine::backend::{AttentionParams, Backend};
use engine::config::{Activation, RopeLayout};
use engine::quant::GgmlType;
use engine::train::TrainBackend;

/// f32 kernels against the CPU twin: the same formulas, summed in another order.
const TOL: f32 = 1e-5;

fn gpu() -> Option<GpuBackend> {
    gpu_backend(f32_path())
}

/// Deterministic values in [-1, 1) (xorshift), so failures reproduce.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn scaled(n: usize, seed: u64, by: f32) -> Vec<f32> {
    values(n, seed).into_iter().map(|v| v * by).collect()
}

/// Asserts every |got − want| ≤ tol · max |want|, naming the first index past it; returns the worst ratio.
fn close(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    // NaN fails too.
    let off = |(g, w): (&f32, &f32)| (g - w).abs().is_nan() || (g - w).abs() > tol * scale;
    if let Some(i) = got.iter().zip(want).position(off) {
        panic!(
            "{what}: first mismatch at index {i}: gpu {} vs cpu {} (bound {:e} = {tol:e} of max |cpu| {scale:e})",
            got[i],
            want[i],
            tol * scale
        );
    }
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / scale)
        .fold(0f32, f32::max);
    eprintln!("{what}: worst {worst:.2e}");
    worst
}

/// The same host values on both backends.
struct Pair<'a> {
    g: &'a GpuBackend,
    c: &'a CpuBackend,
}

type Gt = <GpuBackend as Backend>::Tensor;
type Ct = <CpuBackend as Backend>::Tensor;

impl Pair<'_> {
    fn t(&self, rows: usize, cols: usize, v: &[f32]) -> (Gt, Ct) {
        (
            TrainBackend::tensor(self.g, rows, cols, v).unwrap(),
            TrainBackend::tensor(self.c, rows, cols, v).unwrap(),
        )
    }

    /// A `[rows, cols]` tensor that is a column window of a wider one on the GPU (as split products hand it over),
    /// and dense on the CPU; returns its values too.
    fn window(&self, rows: usize, cols: usize, seed: u64) -> (Gt, Ct, Vec<f32>) {
        let (left, right) = (3, 5);
        let wide = values(rows * (left + cols + right), seed);
        let v: Vec<f32> = wide
            .chunks(left + cols + right)
            .flat_map(|r| r[left..left + cols].to_vec())
            .collect();
        let gw = TrainBackend::tensor(self.g, rows, left + cols + right, &wide).unwrap();
        let piece = self
            .g
            .split_cols(&gw, &[left, cols, right])
            .unwrap()
            .swap_remove(1);
        (
            piece,
            TrainBackend::tensor(self.c, rows, cols, &v).unwrap(),
            v,
        )
    }

    fn check(&self, what: &str, g: &Gt, c: &Ct, tol: f32) -> f32 {
        let got = futures::executor::block_on(TrainBackend::read(self.g, g)).unwrap();
        let want = futures::executor::block_on(TrainBackend::read(self.c, c)).unwrap();
        close(what, &got, &want, tol)
    }
}

/// A `[rows, cols]` weight of `dtype` in file layout: random quants with small finite f16 scales, or random floats
/// (Q8_0 by ggml's own quantisation, so its bytes are realistic).
fn weight_bytes(dtype: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
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
        GgmlType::Q8_0 => engine::quant::quantize_q8_0(&v).unwrap(),
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
            // Byte offsets of the f16 scales (d, m or dmin) in a block.
            let fields: &[usize] = match dtype {
                GgmlType::Q4_0 | GgmlType::Q5_0 => &[0],
                GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
                GgmlType::Q6K => &[208],
                other => unreachable!("{other:?}"),
            };
            let scales = values(len / dtype.type_size() * 2, seed + 1);
            for (block, sc) in bytes
                .chunks_exact_mut(dtype.type_size())
                .zip(scales.chunks_exact(2))
            {
                for (&at, &d) in fields.iter().zip(sc) {
                    block[at..at + 2].copy_from_slice(&half::f16::from_f32(d * 0.05).to_le_bytes());
                }
            }
            bytes
        }
    }
}

/// x · Wᵀ and dy · W through one weight on both backends, for activation rows 1, 3 and 17.
fn check_products(
    g: &GpuBackend,
    dtype: GgmlType,
    out: usize,
    inp: usize,
    seed: u64,
    label: &str,
) -> f32 {
    let c = CpuBackend::new();
    let pair = Pair { g, c: &c };
    let bytes = weight_bytes(dtype, out, inp, seed);
    let gw = g.upload_weight("w", dtype, [out, inp], &bytes).unwrap();
    let cw = c.upload_weight("w", dtype, [out, inp], &bytes).unwrap();
    let mut worst = 0f32;
    for rows in [1, 3, 17] {
        let what = format!("{} [{out}, {inp}]{label}, {rows} rows", dtype.name());
        let (gx, cx) = pair.t(rows, inp, &values(rows * inp, seed + rows as u64));
        let y = pair.check(
            &format!("matmul_f32 {what}"),
            &g.matmul_f32(&gx, &gw).unwrap(),
            &c.matmul_f32(&cx, &cw).unwrap(),
            TOL,
        );
        let (gd, cd) = pair.t(rows, out, &values(rows * out, seed + 100 + rows as u64));
        let dx = pair.check(
            &format!("matmul_grad_x {what}"),
            &g.matmul_grad_x(&gd, &gw).unwrap(),
            &c.matmul_grad_x(&cd, &cw).unwrap(),
            TOL,
        );
        worst = worst.max(y).max(dx);
    }
    worst
}

#[test]
fn products_through_frozen_weights_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let cases = [
        (GgmlType::F32, [(7, 7), (65, 257)]),
        (GgmlType::F16, [(7, 65), (70, 257)]),
        (GgmlType::BF16, [(7, 65), (70, 64)]),
        (GgmlType::Q8_0, [(7, 64), (65, 96)]),
        (GgmlType::Q4_0, [(7, 64), (65, 96)]),
        (GgmlType::Q4_1, [(7, 64), (65, 96)]),
        (GgmlType::Q5_0, [(7, 64), (65, 96)]),
        (GgmlType::Q5_1, [(7, 64), (65, 96)]),
        (GgmlType::Q4K, [(7, 256), (65, 512)]),
        (GgmlType::Q5K, [(7, 256), (65, 512)]),
        (GgmlType::Q6K, [(7, 256), (65, 512)]),
    ];
    let mut worst = 0f32;
    for (k, (dtype, shapes)) in cases.into_iter().enumerate() {
        for (s, (out, inp)) in shapes.into_iter().enumerate() {
            worst = worst.max(check_products(
                &g,
                dtype,
                out,
                inp,
                10 * k as u64 + s as u64,
                "",
            ));
        }
    }
    eprintln!("products: worst {worst:.2e} of max |cpu|");
    // Shapes that do not meet are errors, not panics.
    let w = g
        .upload_weight(
            "w",
            GgmlType::Q8_0,
            [7, 64],
            &weight_bytes(GgmlType::Q8_0, 7, 64, 1),
        )
        .unwrap();
    let x = TrainBackend::tensor(&g, 3, 32, &values(96, 2)).unwrap();
    assert!(g.matmul_f32(&x, &w).is_err());
    assert!(g.matmul_grad_x(&x, &w).is_err());
}

#[test]
fn products_on_the_kernels_for_real_gpus_match_the_cpu() {
    // A CPU-emulated adapter takes the product kernels written for it and splits dy · W less; this runs the others.
    let options = GpuOptions {
        force_cooperative_products: true,
        ..f32_path()
    };
    let Some(g) = gpu_backend(options) else {
        return;
    };
    for (k, (dtype, out, inp)) in [
        (GgmlType::Q8_0, 301, 96),
        (GgmlType::Q4K, 65, 512),
        (GgmlType::F16, 70, 257),
    ]
    .into_iter()
    .enumerate()
    {
        check_products(&g, dtype, out, inp, 700 + k as u64, " (cooperative)");
    }
}

#[test]
fn the_exact_path_refuses_to_train_by_name() {
    // Its products take activations rounded as ggml rounds them, which a gradient must not follow.
    let Some(g) = gpu_backend(exact_path()) else {
        return;
    };
    let w = g
        .upload_weight(
            "w",
            GgmlType::Q8_0,
            [7, 64],
            &weight_bytes(GgmlType::Q8_0, 7, 64, 1),
        )
        .unwrap();
    let x = TrainBackend::tensor(&g, 3, 64, &values(192, 2)).unwrap();
    let err = g.matmul_f32(&x, &w).err().expect("refused").to_string();
    assert!(err.contains("exact path"), "{err}");
}

#[test]
fn products_through_weights_split_into_chunks_match_the_cpu() {
    // A small binding limit cuts each weight into several buffers: dy · W then sums over every chunk's slices.
    let Some(g) = gpu_backend(GpuOptions {
        max_binding_bytes: Some(4096),
        ..f32_path()
    }) else {
        return;
    };
    for (k, (dtype, out, inp)) in [
        (GgmlType::Q8_0, 301, 96),
        (GgmlType::Q4K, 37, 512),
        (GgmlType::F16, 70, 65),
    ]
    .into_iter()
    .enumerate()
    {
        check_products(&g, dtype, out, inp, 500 + k as u64, " in chunks");
    }
}

#[test]
fn small_products_match_the_cpu_with_every_transpose() {
    let Some(g) = gpu() else { return };
    let c = CpuBackend::new();
    let p = Pair { g: &g, c: &c };
    for (m, k, n) in [(1, 7, 3), (3, 65, 5), (17, 257, 8), (70, 3, 64)] {
        for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
            let (ar, ac) = if a_t { (k, m) } else { (m, k) };
            let (br, bc) = if b_t { (n, k) } else { (k, n) };
            let (ga, ca) = p.t(ar, ac, &values(ar * ac, (m * k) as u64));
            let (gb, cb) = p.t(br, bc, &values(br * bc, (k * n) as u64 + 1));
            p.check(
                &format!("mm [{m}, {k}] · [{k}, {n}] a_t {a_t} b_t {b_t}"),
                &g.mm(&ga, &gb, a_t, b_t).unwrap(),
                &c.mm(&ca, &cb, a_t, b_t).unwrap(),
                TOL,
            );
        }
    }
    // x · Aᵀ with x a column window of a packed product.
    let (gx, cx, _) = p.window(17, 65, 3);
    let (ga, ca) = p.t(4, 65, &values(4 * 65, 4));
    p.check(
        "mm of a window",
        &g.mm(&gx, &ga, false, true).unwrap(),
        &c.mm(&cx, &ca, false, true).unwrap(),
        TOL,
    );
    assert!(
        g.mm(&gx, &ga, false, false).is_err(),
        "inner sizes that differ are refused"
    );
}

#[test]
fn elementwise_ops_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let c = CpuBackend::new();
    let p = Pair { g: &g, c: &c };
    for (rows, cols) in [(1, 7), (3, 257), (17, 65)] {
        let shape = format!("[{rows}, {cols}]");
        let n = rows * cols;
        let (gwin, cwin, _) = p.window(rows, cols, 1);
        let (gb, cb) = p.t(rows, cols, &values(n, 2));
        p.check(
            &format!("add_scaled {shape} (a window)"),
            &g.add_scaled(&gwin, &gb, -0.375).unwrap(),
            &c.add_scaled(&cwin, &cb, -0.375).unwrap(),
            TOL,
        );
        // Gates over [-8, 8): both tails of SiLU and GELU, and their small-|x| middle.
        let (gg, cg) = p.t(rows, cols, &scaled(n, 3, 8.0));
        let (gd, cd) = p.t(rows, cols, &values(n, 4));
        for act in [Activation::Silu, Activation::GeluTanh] {
            p.check(
                &format!("gated_f32 {act:?} {shape}"),
                &g.gated_f32(&gg, &gwin, act).unwrap(),
                &c.gated_f32(&cg, &cwin, act).unwrap(),
                TOL,
            );
            let (g_dg, g_du) = g.gated_backward(&gg, &gwin, &gd, act).unwrap();
            let (c_dg, c_du) = c.gated_backward(&cg, &cwin, &cd, act).unwrap();
            p.check(
                &format!("gated_backward {act:?} {shape} d gate"),
                &g_dg,
                &c_dg,
                TOL,
            );
            p.check(
                &format!("gated_backward {act:?} {shape} d up"),
                &g_du,
                &c_du,
                TOL,
            );
        }
        let (gy, cy) = p.t(rows, cols, &scaled(n, 5, 29.0));
        p.check(
            &format!("softcap_backward {shape}"),
            &g.softcap_backward(&gy, &gd, 30.0).unwrap(),
            &c.softcap_backward(&cy, &cd, 30.0).unwrap(),
            TOL,
        );
        let (g3, c3) = p.t(rows, 3, &values(rows * 3, 6));
        p.check(
            &format!("concat_cols {shape}"),
            &g.concat_cols(&[gb.clone(), gwin.clone(), g3.clone()])
                .unwrap(),
            &c.concat_cols(&[cb.clone(), cwin.clone(), c3.clone()])
                .unwrap(),
            0.0,
        );
    }
    let (ga, _) = p.t(3, 7, &values(21, 7));
    let (gb, _) = p.t(2, 7, &values(14, 8));
    assert!(g.add_scaled(&ga, &gb, 1.0).is_err());
    assert!(g.concat_cols(&[ga.clone(), gb.clone()]).is_err());
    assert!(g.concat_cols(&[]).is_err());
    assert!(g.gated_backward(&ga, &ga, &gb, Activation::Silu).is_err());
}

#[test]
fn rms_norm_backward_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let c = CpuBackend::new();
    let p = Pair { g: &g, c: &c };
    // Whole rows (7, 65, 257 and 600: more values than the workgroup), and QK-norm's heads of 16 in rows of 64.
    for (rows, cols, group) in [
        (1, 7, 7),
        (3, 257, 257),
        (17, 65, 65),
        (3, 600, 600),
        (17, 64, 16),
    ] {
        let (gx, cx, _) = p.window(rows, cols, 11);
        let w: Vec<f32> = values(group, 12).iter().map(|v| 1.0 + v).collect();
        let (gw, cw) = (g.upload_vector(&w).unwrap(), c.upload_vector(&w).unwrap());
        let (gd, cd) = p.t(rows, cols, &values(rows * cols, 13));
        p.check(
            &format!("rms_norm_backward [{rows}, {cols}] groups of {group}"),
            &g.rms_norm_backward(&gx, &gw, &gd, 1e-6).unwrap(),
            &c.rms_norm_backward(&cx, &cw, &cd, 1e-6).unwrap(),
            TOL,
        );
    }
    let (gx, _) = p.t(3, 10, &values(30, 14));
    assert!(g
        .rms_norm_backward(&gx, &g.upload_vector(&[1.0; 4]).unwrap(), &gx, 1e-6)
        .is_err());
}

#[test]
fn rope_backward_matches_the_cpu_in_both_layouts() {
    let Some(g) = gpu() else { return };
    let c = CpuBackend::new();
    let p = Pair { g: &g, c: &c };
    for (rows, heads, half) in [(1, 1, 4), (17, 3, 20), (70, 2, 32)] {
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 10000f32.powf(-2.0 * i as f32 / (2 * half) as f32))
            .collect();
        let cols = heads * 2 * half;
        let (gd, cd) = p.t(rows, cols, &values(rows * cols, 21));
        for layout in [RopeLayout::Adjacent, RopeLayout::SplitHalves] {
            let (gr, cr) = (
                g.rope_table(&inv_freq, layout).unwrap(),
                c.rope_table(&inv_freq, layout).unwrap(),
            );
            p.check(
                &format!("rope_backward {layout:?} [{rows}, {heads} × {}]", 2 * half),
                &g.rope_backward(&gd, &gr, heads).unwrap(),
                &c.rope_backward(&cd, &cr, heads).unwrap(),
                TOL,
            );
        }
        let gr = g.rope_table(&inv_freq, RopeLayout::Adjacent).unwrap();
        assert!(g.rope_backward(&gd, &gr, heads + 1).is_err());
    }
}

#[test]
fn attention_and_its_backward_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let c = CpuBackend::new();
    let p = Pair { g: &g, c: &c };
    let cases = [
        // GQA 4 over 2, a window shorter than the sequence, a softcap that bites.
        (
            17,
            AttentionParams {
                n_heads: 4,
                n_kv_heads: 2,
                head_dim: 8,
                scale: 0.7,
                softcap: Some(1.5),
                window: Some(5),
            },
        ),
        // One row; heads of 65 values (two slots per invocation, the second nearly empty).
        (
            1,
            AttentionParams {
                n_heads: 2,
                n_kv_heads: 1,
                head_dim: 65,
                scale: 0.125,
                softcap: None,
                window: None,
            },
        ),
        (
            3,
            AttentionParams {
                n_heads: 2,
                n_kv_heads: 2,
                head_dim: 65,
                scale: 0.125,
                softcap: None,
                window: None,
            },
        ),
        // More keys than a workgroup's tile (64), and Gemma's 256-value heads with a window and a softcap.
        (
            70,
            AttentionParams {
                n_heads: 3,
                n_kv_heads: 1,
                head_dim: 16,
                scale: 0.25,
                softcap: None,
                window: None,
            },
        ),
        (
            70,
            AttentionParams {
                n_heads: 2,
                n_kv_heads: 1,
                head_dim: 256,
                scale: 0.0625,
                softcap: Some(50.0),
                window: Some(66),
            },
        ),
    ];
    for (rows, a) in cases {
        let what = format!("{rows} rows, {a:?}");
        let (qw, kw) = (a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim);
        let (gq, cq) = p.t(rows, qw, &scaled(rows * qw, 31, 2.0));
        let (gk, ck) = p.t(rows, kw, &values(rows * kw, 32));
        // v as a column window of a packed product.
        let (gv, cv, _) = p.window(rows, kw, 33);
        let (g_out, g_lse) = g.attention_f32(&gq, &gk, &gv, &a).unwrap();
        let (c_out, c_lse) = c.attention_f32(&cq, &ck, &cv, &a).unwrap();
        p.check(&format!("attention_f32 out, {what}"), &g_out, &c_out, TOL);
        p.check(&format!("attention_f32 lse, {what}"), &g_lse, &c_lse, TOL);
        let (gd, cd) = p.t(rows, qw, &values(rows * qw, 34));
        // Both backwards from the CPU's saved tensors, so only the backward differs.
        let (gco, gcl) = (
            TrainBackend::tensor(
                &g,
                rows,
                qw,
                &futures::executor::block_on(c.read(&c_out)).unwrap(),
            )
            .unwrap(),
            TrainBackend::tensor(
                &g,
                rows,
                a.n_heads,
                &futures::executor::block_on(c.read(&c_lse)).unwrap(),
            )
            .unwrap(),
        );
        let (gdq, gdk, gdv) = g
            .attention_backward(&gq, &gk, &gv, &gco, &gcl, &gd, &a)
            .unwrap();
        let (cdq, cdk, cdv) = c
            .attention_backward(&cq, &ck, &cv, &c_out, &c_lse, &cd, &a)
            .unwrap();
        p.check(&format!("attention_backward dq, {what}"), &gdq, &cdq, TOL);
        p.check(&format!("attention_backward dk, {what}"), &gdk, &cdk, TOL);
        p.check(&format!("attention_backward dv, {what}"), &gdv, &cdv, TOL);
    }
    let bad = AttentionParams {
        n_heads: 3,
        n_kv_heads: 2,
        head_dim: 4,
        scale: 1.0,
        softcap: None,
        window: None,
    };
    let (gq, _) = p.t(2, 12, &values(24, 35));
    let (gk, _) = p.t(2, 8, &values(16, 36));
    assert!(
        g.attention_f32(&gq, &gk, &gk, &bad).is_err(),
        "heads that do not share kv heads evenly are refused"
    );
}

#[test]
fn cross_entropy_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let c = CpuBackend::new();
    let p = Pair { g: &g, c: &c };
    // Vocabularies off and over the 256-wide workgroup, up to real Gemma's 262144; unscored rows among them.
    let cases: [(usize, Vec<Option<u32>>); 4] = [
        (7, vec![Some(3)]),
        (257, vec![Some(0), None, Some(256)]),
        (
            65,
            (0..17)
                .map(|i| (i % 3 != 1).then_some(i as u32 * 3))
                .collect(),
        ),
        (262_144, vec![None, Some(262_143), Some(12_345)]),
    ];
    for (vocab, targets) in cases {
        let rows = targets.len();
        let (gl, cl) = p.t(rows, vocab, &scaled(rows * vocab, vocab as u64, 6.0));
        let (g_loss, g_grad) = g.cross_entropy(&gl, &targets, 0.125).unwrap();
        let (c_loss, c_grad) = c.cross_entropy(&cl, &targets, 0.125).unwrap();
        p.check(
            &format!("cross_entropy loss, vocab {vocab}, {rows} rows"),
            &g_loss,
            &c_loss,
            TOL,
        );
        p.check(
            &format!("cross_entropy dlogits, vocab {vocab}, {rows} rows"),
            &g_grad,
            &c_grad,
            TOL,
        );
    }
    let (gl, _) = p.t(2, 7, &values(14, 41));
    assert!(
        g.cross_entropy(&gl, &[Some(1)], 1.0).is_err(),
        "one target per row"
    );
    assert!(
        g.cross_entropy(&gl, &[Some(1), Some(7)], 1.0).is_err(),
        "targets inside the vocabulary"
    );
}

/// The loss and every LoRA gradient (in module order) of `batch` under `lora` (given in HF's q/k row layout).
fn pass<B: TrainBackend>(
    m: &Loaded<B>,
    lora: &engine::lora::LoraFile,
    batch: &[engine::train::Example],
) -> (f32, Vec<f32>) {
    let cfg = &m.model.config;
    let lora = lora.qk_rows_moved(cfg, RopeLayout::SplitHalves, cfg.rope_layout);
    let device = engine::train::DeviceLora::upload(&m.backend, &lora).expect("upload");
    let out = futures::executor::block_on(engine::train::loss_and_grads(
        &m.backend, &m.model, &device, batch, batch.len(),
    ))
    .expect("pass");
    let grads = out
        .grads
        .modules
        .values()
        .flat_map(|(a, b)| a.iter().chain(b).copied())
        .collect();
    (out.loss, grads)
}

/// The whole pass on the GPU against the CPU with adapters on some projections only (PEFT's default is q and v):
/// the others' outputs stay column windows of the packed q·k·v and gate·up products, and every op that takes one
/// next must read it as such.
#[test]
fn a_pass_with_adapters_on_some_projections_matches_the_cpu() {
    use engine::lora::{LoraFile, Target};
    use engine::train::Example;
    if gpu().is_none() {
        return;
    }
    let batch = [
        Example {
            inputs: vec![1, 5, 9, 13, 17, 21, 3, 7],
            targets: vec![
                None,
                Some(9),
                Some(13),
                Some(17),
                Some(21),
                Some(3),
                Some(7),
                Some(2),
            ],
        },
        Example {
            inputs: vec![4, 8, 15],
            targets: vec![Some(8), None, Some(16)],
        },
    ];
    for name in ["llama", "gemma2"] {
        let init = LoraFile::open(fixture(&format!("train/{name}/init"))).expect("init adapter");
        let cpu = load_cpu(&fixture(&format!("tiny/{name}")));
        let gpu = load_gpu(&fixture(&format!("tiny/{name}"))).expect("a GPU adapter");
        for targets in [
            vec![Target::Q, Target::V],
            vec![Target::K, Target::Down],
            vec![Target::Up],
        ] {
            let only = LoraFile {
                modules: init
                    .modules
                    .iter()
                    .filter(|(k, _)| targets.contains(&k.1))
                    .map(|(k, m)| (*k, m.clone()))
                    .collect(),
                ..init.clone()
            };
            let (want, got) = (pass(&cpu, &only, &batch), pass(&gpu, &only, &batch));
            let what = format!("{name} with adapters on {targets:?}");
            close(&format!("{what}: loss"), &[got.0], &[want.0], 1e-5);
            // A whole pass compounds every op's reordering, hence a looser bound than one kernel's.
            close(&format!("{what}: gradients"), &got.1, &want.1, 3e-5);
        }
    }
}
