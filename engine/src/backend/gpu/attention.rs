//! KV-cache append and attention (shaders/kv_append.wgsl, attention.wgsl, attention_combine.wgsl).
//!
//! A call records the append of its keys and values into the ring, then one attention dispatch. A decode step that
//! sees more than `SPLIT_KEYS` keys spreads them over several workgroups per head (flash-decoding) and merges their
//! partial softmaxes with a third dispatch.

use super::activation_rounding::{block_size, delta_tensor};
use super::recorder::{grid, Access};
use super::{GpuBackend, GpuKvCache, GpuRope, GpuTensor};
use crate::backend::AttentionParams;
use crate::{Error, Result};

const APPEND: &str = include_str!("../../../../shaders/kv_append.wgsl");
const ROPE_APPEND: &str = concat!(
    include_str!("../../../../shaders/rope_common.wgsl"),
    include_str!("../../../../shaders/rope_append.wgsl")
);
// attention.wgsl with its epilogue (rounding or not) and prologue (fused RoPE and append, or not) appended.
const ATTEND: &str = concat!(
    include_str!("../../../../shaders/attention.wgsl"),
    include_str!("../../../../shaders/attention_no_round.wgsl"),
    include_str!("../../../../shaders/attention_no_rope.wgsl")
);
const ATTEND_ROUND: &str = concat!(
    include_str!("../../../../shaders/round_block.wgsl"),
    include_str!("../../../../shaders/attention.wgsl"),
    include_str!("../../../../shaders/attention_round.wgsl"),
    include_str!("../../../../shaders/attention_no_rope.wgsl")
);
const ATTEND_ROPE: &str = concat!(
    include_str!("../../../../shaders/rope_common.wgsl"),
    include_str!("../../../../shaders/attention.wgsl"),
    include_str!("../../../../shaders/attention_no_round.wgsl"),
    include_str!("../../../../shaders/attention_rope.wgsl")
);
const ATTEND_ROPE_ROUND: &str = concat!(
    include_str!("../../../../shaders/round_block.wgsl"),
    include_str!("../../../../shaders/rope_common.wgsl"),
    include_str!("../../../../shaders/attention.wgsl"),
    include_str!("../../../../shaders/attention_round.wgsl"),
    include_str!("../../../../shaders/attention_rope.wgsl")
);
const COMBINE: &str = include_str!("../../../../shaders/attention_combine.wgsl");

/// Longest head the kernels take (Gemma's 256).
const MAX_HEAD_DIM: usize = 256;
/// Decode: threads (= keys per tile) of a workgroup, and how many query heads of one kv head it serves together.
const DECODE_WG: usize = 128;
const DECODE_HEADS: usize = 4;
/// Prefill: threads (= keys per tile) and query rows of a workgroup.
const PREFILL_WG: usize = 64;
const PREFILL_ROWS: usize = 8;
/// A decode step that sees more keys than this splits them into chunks of at least this many per workgroup.
const SPLIT_KEYS: usize = 256;
const MAX_SPLITS: usize = 32;
const MAX_GROUPS: usize = 65535;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AppendParams {
    n: u32,
    kv_row: u32,
    capacity: u32,
    start_pos: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RopeAppendParams {
    rows: u32,
    q_heads: u32,
    kv_heads: u32,
    half: u32,
    start_pos: u32,
    start_slot: u32,
    capacity: u32,
    theta_scale: f32,
    q_at: [u32; 2],
    k_at: [u32; 2],
    v_at: [u32; 2],
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttendParams {
    rows: u32,
    n_heads: u32,
    group_size: u32,
    kv_row: u32,
    start_pos: u32,
    capacity: u32,
    window: u32,
    splits: u32,
    chunk: u32,
    scale: f32,
    softcap: f32,
    has_softcap: u32,
    theta_scale: f32,
    slot: u32,
    q_at: [u32; 2],
    k_at: [u32; 2],
    v_at: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CombineParams {
    heads: u32,
    head_dim: u32,
    splits: u32,
    _pad: u32,
}

/// Appends `k`, `v` (`[rows, n_kv·head_dim]`, positions start_pos..) to the cache, then attends `q`
/// (`[rows, n_heads·head_dim]`) over every visible cached position → `[rows, n_heads·head_dim]`.
/// The KV cache's element type: f16 where the adapter has shader-f16 (half the memory and bandwidth), else f32.
fn kv_type(b: &GpuBackend) -> (&'static str, String) {
    ("KV", if b.rec.ctx.f16 { "f16" } else { "f32" }.to_string())
}

/// Bytes of one cached key or value element.
pub(crate) fn kv_element_bytes(b: &GpuBackend) -> usize {
    if b.rec.ctx.f16 {
        2
    } else {
        4
    }
}

///
/// With `rope`, q and k are rotated first, in the same pass as the append (rope_append.wgsl). With `round` (a
/// round_block.wgsl mode), the output may also come back rounded in that mode (with Q8_1's sums) from the same pass.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    b: &GpuBackend,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    cache: &mut GpuKvCache,
    p: &AttentionParams,
    start_pos: usize,
    rope: Option<&GpuRope>,
    round: Option<u32>,
) -> Result<(GpuTensor, Option<(GpuTensor, Option<GpuTensor>)>)> {
    let (hq, hkv, d) = (p.n_heads, p.n_kv_heads, p.head_dim);
    if hkv == 0 || !hq.is_multiple_of(hkv) || d == 0 || d > MAX_HEAD_DIM || hq > MAX_GROUPS {
        return Err(Error::Backend(format!(
            "GPU attention with {hq} query heads over {hkv} kv heads of size {d} (head sizes 1..={MAX_HEAD_DIM})"
        )));
    }
    if hkv != cache.spec.n_kv_heads || d != cache.spec.head_dim {
        return Err(Error::Backend(format!(
            "attention over {hkv} kv heads of size {d} on a cache for {} heads of size {}",
            cache.spec.n_kv_heads, cache.spec.head_dim
        )));
    }
    let rows = q.rows;
    let kv_row = hkv * d;
    if q.cols != hq * d || (k.rows, k.cols) != (rows, kv_row) || (v.rows, v.cols) != (rows, kv_row)
    {
        return Err(Error::Backend(format!(
            "attention inputs q [{}, {}], k [{}, {}], v [{}, {}] do not fit {hq} query and {hkv} kv heads of {d}",
            q.rows, q.cols, k.rows, k.cols, v.rows, v.cols
        )));
    }
    if p.window == Some(0) {
        return Err(Error::Backend(
            "attention with a window of 0 positions".into(),
        ));
    }
    let end = start_pos + rows;
    if end > cache.spec.max_positions {
        return Err(Error::InvalidArgument(format!(
            "the context is full: {end} positions do not fit in {}",
            cache.spec.max_positions
        )));
    }
    // Every key a query of this pass sees must still be in the ring: the first query's window start onwards.
    let oldest = p.window.map_or(0, |w| (start_pos + 1).saturating_sub(w));
    if end - oldest > cache.capacity {
        return Err(Error::Backend(format!(
            "a KV cache of {} positions cannot hold the {} that positions {start_pos}..{end} attend to",
            cache.capacity,
            end - oldest
        )));
    }
    if end >= u32::MAX as usize || rows.div_ceil(PREFILL_ROWS) > MAX_GROUPS {
        return Err(Error::Backend(format!(
            "GPU attention over positions {start_pos}..{end} in one pass"
        )));
    }
    // The exact path (the CPU backend's bits) has kernels of its own. A softcap stays on this path: the CPU caps with
    // the platform's tanh, which no kernel reproduces, so Gemma 2's attention is close to the CPU's but not exact.
    if b.rec.ctx.exact && p.softcap.is_none() {
        return super::attention_exact::attention(b, q, k, v, cache, p, start_pos, rope, round);
    }
    let out = b.tensor(rows, hq * d);
    if rows == 0 {
        return Ok((out, None));
    }

    let group = hq / hkv;
    let (wg, rb, hb) = if rows == 1 {
        (DECODE_WG, 1, group.min(DECODE_HEADS))
    } else {
        (PREFILL_WG, PREFILL_ROWS, 1)
    };
    // A decode step over many keys: chunks of whole tiles, at least SPLIT_KEYS keys each, at most MAX_SPLITS.
    let visible = end - oldest;
    let (splits, chunk) = if rows == 1 && visible > SPLIT_KEYS {
        let chunk = SPLIT_KEYS
            .max(visible.div_ceil(MAX_SPLITS))
            .next_multiple_of(wg);
        (visible.div_ceil(chunk), chunk)
    } else {
        (1, visible)
    };

    // A decode step in one split rotates and appends inside the attention pass (attention_rope.wgsl): there the
    // workgroups of a kv head are the only readers of its new key. Otherwise a pass of its own does it first.
    let fused_rope = rope.filter(|_| rows == 1 && splits == 1);
    let q = match (rope, fused_rope) {
        (_, Some(_)) => q.clone(),
        (Some(rope), None) => rope_append(b, q, k, v, cache, p, start_pos, rope)?,
        (None, _) => {
            append(b, k, v, cache, start_pos)?;
            q.clone()
        }
    };
    // With one split the kernel can round its output for the o projection in the same pass.
    let rounding = round.filter(|&mode| splits == 1 && d.is_multiple_of(block_size(mode)));
    let mut defines = vec![
        ("HEAD_DIM", format!("{d}u")),
        ("RB", format!("{rb}u")),
        ("HB", format!("{hb}u")),
        ("WG", format!("{wg}u")),
        kv_type(b),
    ];
    if let Some(rope) = fused_rope {
        defines.push((
            "ADJACENT",
            (rope.layout == crate::config::RopeLayout::Adjacent).to_string(),
        ));
    }
    if let Some(mode) = rounding {
        defines.push(("ROUND", format!("{mode}u")));
    }
    let (name, source) = match (fused_rope.is_some(), rounding.is_some()) {
        (false, false) => ("attention", ATTEND),
        (false, true) => ("attention_round", ATTEND_ROUND),
        (true, false) => ("attention_rope", ATTEND_ROPE),
        (true, true) => ("attention_rope_round", ATTEND_ROPE_ROUND),
    };
    // Bindings 1-4 always; 5-7 for the fused RoPE (read-only stand-ins when only rounding); 8-9 for the rounding.
    let mut access = vec![
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
    ];
    if fused_rope.is_some() || rounding.is_some() {
        access.extend([Access::Read; 3]);
    }
    if rounding.is_some() {
        access.extend([Access::ReadWrite; 2]);
    }
    let kernel = b.rec.kernel(name, source, &defines, &access);
    let ((q_buf, q_at), (k_buf, k_at), (v_buf, v_at)) = (q.window(), k.window(), v.window());
    let params = AttendParams {
        rows: rows as u32,
        n_heads: hq as u32,
        group_size: group as u32,
        kv_row: kv_row as u32,
        start_pos: start_pos as u32,
        capacity: cache.capacity as u32,
        window: p
            .window
            .map_or(u32::MAX, |w| w.min(u32::MAX as usize) as u32),
        splits: splits as u32,
        chunk: chunk as u32,
        scale: p.scale,
        softcap: p.softcap.unwrap_or(1.0),
        has_softcap: p.softcap.is_some() as u32,
        theta_scale: fused_rope.and_then(|r| r.theta_scale).unwrap_or(0.0),
        slot: (start_pos % cache.capacity) as u32,
        q_at: [q_at.offset, q_at.stride],
        k_at: [k_at.offset, k_at.stride],
        v_at: [v_at.offset, v_at.stride],
    };
    let groups = [
        (hkv * group.div_ceil(hb)) as u32,
        rows.div_ceil(rb) as u32,
        splits as u32,
    ];
    if splits == 1 {
        let mut bufs = vec![q_buf, &cache.k, &cache.v, out.buf()];
        match fused_rope {
            Some(rope) => bufs.extend([k_buf, v_buf, &rope.inv_freq]),
            None if rounding.is_some() => bufs.extend([q_buf; 3]),
            None => {}
        }
        let Some(mode) = rounding else {
            b.rec
                .dispatch(&kernel, bytemuck::bytes_of(&params), &bufs, groups)?;
            return Ok((out, None));
        };
        let rounded = b.tensor(rows, hq * d);
        let sums = delta_tensor(b, mode, rows, hq * d);
        bufs.extend([rounded.buf(), sums.as_ref().map_or(b.unused(), |s| s.buf())]);
        b.rec
            .dispatch(&kernel, bytemuck::bytes_of(&params), &bufs, groups)?;
        return Ok((out, Some((rounded, sums))));
    }
    // Sized for the most splits, not this step's: the pool then hands back the same buffer as the context grows.
    let scratch = b.tensor(rows * hq * MAX_SPLITS, d + 2);
    b.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[q.buf(), &cache.k, &cache.v, scratch.buf()],
        groups,
    )?;
    let combine = b.rec.kernel(
        "attention_combine",
        COMBINE,
        &[],
        &[Access::Read, Access::ReadWrite],
    );
    let params = CombineParams {
        heads: (rows * hq) as u32,
        head_dim: d as u32,
        splits: splits as u32,
        _pad: 0,
    };
    b.rec.dispatch(
        &combine,
        bytemuck::bytes_of(&params),
        &[scratch.buf(), out.buf()],
        grid((rows * hq) as u32),
    )?;
    Ok((out, None))
}

/// Records k and v (`[rows, kv_row]`, positions start_pos..) into their ring slots.
fn append(
    b: &GpuBackend,
    k: &GpuTensor,
    v: &GpuTensor,
    cache: &GpuKvCache,
    start_pos: usize,
) -> Result<()> {
    if !k.is_dense() || !v.is_dense() {
        return Err(Error::Backend(
            "the KV append reads dense keys and values".into(),
        ));
    }
    let kernel = b.rec.kernel(
        "kv_append",
        APPEND,
        &[kv_type(b)],
        &[
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
        ],
    );
    let n = k.len();
    let params = AppendParams {
        n: n as u32,
        kv_row: k.cols as u32,
        capacity: cache.capacity as u32,
        start_pos: (start_pos % cache.capacity) as u32,
    };
    b.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[k.buf(), v.buf(), &cache.k, &cache.v],
        grid(n.div_ceil(256) as u32),
    )
}

/// Rotates q and k and records k and v into their ring slots in one pass; returns the rotated q.
#[allow(clippy::too_many_arguments)]
fn rope_append(
    b: &GpuBackend,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    cache: &GpuKvCache,
    p: &AttentionParams,
    start_pos: usize,
    rope: &GpuRope,
) -> Result<GpuTensor> {
    if 2 * rope.half != p.head_dim {
        return Err(Error::Backend(format!(
            "RoPE table for head size {} used on heads of {}",
            2 * rope.half,
            p.head_dim
        )));
    }
    let adjacent = rope.layout == crate::config::RopeLayout::Adjacent;
    // q, k and v may be windows of one packed q|k|v product.
    let ((q_buf, q_at), (k_buf, k_at), (v_buf, v_at)) = (q.window(), k.window(), v.window());
    let access = [
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
    ];
    let kernel = b.rec.kernel(
        "rope_append",
        ROPE_APPEND,
        &[kv_type(b), ("ADJACENT", adjacent.to_string())],
        &access,
    );
    let params = RopeAppendParams {
        rows: q.rows as u32,
        q_heads: p.n_heads as u32,
        kv_heads: p.n_kv_heads as u32,
        half: rope.half as u32,
        start_pos: start_pos as u32,
        start_slot: (start_pos % cache.capacity) as u32,
        capacity: cache.capacity as u32,
        theta_scale: rope.theta_scale.unwrap_or(0.0),
        q_at: [q_at.offset, q_at.stride],
        k_at: [k_at.offset, k_at.stride],
        v_at: [v_at.offset, v_at.stride],
        _pad: [0; 2],
    };
    let out = b.tensor(q.rows, q.cols);
    let invocations = q.rows * (p.n_heads + p.n_kv_heads) * rope.half + v.len();
    let bufs = [
        q_buf,
        k_buf,
        v_buf,
        &rope.inv_freq,
        out.buf(),
        &cache.k,
        &cache.v,
    ];
    b.rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &bufs,
        grid(invocations.div_ceil(256) as u32),
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::CpuBackend;
    use crate::backend::gpu::testing::{assert_close, backend, backend_with, read, values};
    use crate::backend::gpu::GpuOptions;
    use crate::backend::gpu::{GpuBackend, GpuKvCache};
    use crate::backend::{AttentionParams, Backend, KvSpec};
    use crate::quant::GgmlType;

    /// The same layer on both backends, fed the same keys, values and queries.
    struct Twin {
        g: GpuBackend,
        c: CpuBackend,
        gc: GpuKvCache,
        cc: <CpuBackend as Backend>::KvCache,
        p: AttentionParams,
        /// Queries are values in [-1, 1) times this (larger scores make the softmax peakier, the softcap bite).
        q_amp: f32,
        /// Allowed |gpu - cpu| relative to max |cpu|: 1e-5 in f32; f16 keys, values and products lose more.
        tol: f32,
        /// RoPE tables: q and k are rotated inside the call (the GPU fuses it with the append).
        rope: Option<(crate::backend::gpu::GpuRope, <CpuBackend as Backend>::Rope)>,
        /// The product the output feeds (an F32 weight: nothing is rounded).
        next: (
            crate::backend::gpu::GpuWeight,
            <CpuBackend as Backend>::Weight,
        ),
        /// The GPU gets q, k and v as column windows of one tensor (a packed q|k|v product).
        packed: bool,
    }

    impl Twin {
        fn new(g: GpuBackend, p: AttentionParams, max_positions: usize, q_amp: f32) -> Self {
            let spec = KvSpec {
                n_kv_heads: p.n_kv_heads,
                head_dim: p.head_dim,
                max_positions,
                window: p.window,
            };
            let c = CpuBackend::new();
            let gc = g.new_kv_cache(spec).unwrap();
            let cc = c.new_kv_cache(spec).unwrap();
            let tol = if g.uses_f16() { F16_TOLERANCE } else { 1e-5 };
            let qc = p.n_heads * p.head_dim;
            let zeros = vec![0u8; qc * 4];
            let next = (
                g.upload_weight("o", GgmlType::F32, [1, qc], &zeros)
                    .unwrap(),
                c.upload_weight("o", GgmlType::F32, [1, qc], &zeros)
                    .unwrap(),
            );
            Self {
                g,
                c,
                gc,
                cc,
                p,
                q_amp,
                tol,
                rope: None,
                packed: false,
                next,
            }
        }

        /// The same, with q and k rotated in `layout` inside each call (`attention_with_rope`).
        fn with_rope(mut self, layout: crate::config::RopeLayout) -> Self {
            let half = self.p.head_dim / 2;
            let inv_freq: Vec<f32> = (0..half)
                .map(|i| 10000f32.powf(-2.0 * i as f32 / (2 * half) as f32))
                .collect();
            self.rope = Some((
                self.g.rope_table(&inv_freq, layout).unwrap(),
                self.c.rope_table(&inv_freq, layout).unwrap(),
            ));
            // Angles from the GPU's sin and cos: the rope test's bound.
            self.tol = self.tol.max(2e-4);
            self
        }

        /// Runs positions start_pos..start_pos + rows through both caches; compares the outputs when `check`.
        fn step(&mut self, start_pos: usize, rows: usize, check: bool) {
            let p = self.p;
            let (qc, kvc) = (p.n_heads * p.head_dim, p.n_kv_heads * p.head_dim);
            let seed = 1000 + start_pos as u64 * 3;
            let q: Vec<f32> = values(rows * qc, seed)
                .iter()
                .map(|x| x * self.q_amp)
                .collect();
            let (k, v) = (values(rows * kvc, seed + 1), values(rows * kvc, seed + 2));
            let cpu = |x: &[f32], cols| {
                candle_core::Tensor::from_slice(x, (rows, cols), &candle_core::Device::Cpu).unwrap()
            };
            let (cq, ck, cv) = (cpu(&q, qc), cpu(&k, kvc), cpu(&v, kvc));
            let want = match &self.rope {
                Some((_, rope)) => self.c.attention_with_rope(
                    &cq,
                    &ck,
                    &cv,
                    rope,
                    &mut self.cc,
                    &p,
                    start_pos,
                    &self.next.1,
                ),
                None => self.c.attention(&cq, &ck, &cv, &mut self.cc, &p, start_pos),
            }
            .unwrap();
            let g = &self.g;
            let (gq, gk, gv) = if self.packed {
                // q | k | v side by side in each row, as one packed product leaves them.
                let rows_of = |x: &[f32], w: usize, r: usize| x[r * w..(r + 1) * w].to_vec();
                let all: Vec<f32> = (0..rows)
                    .flat_map(|r| {
                        [rows_of(&q, qc, r), rows_of(&k, kvc, r), rows_of(&v, kvc, r)].concat()
                    })
                    .collect();
                let packed = g.tensor_from_host(&all, rows, qc + 2 * kvc).unwrap();
                let [gq, gk, gv]: [_; 3] = g
                    .split_cols(&packed, &[qc, kvc, kvc])
                    .unwrap()
                    .try_into()
                    .ok()
                    .unwrap();
                (gq, gk, gv)
            } else {
                (
                    g.tensor_from_host(&q, rows, qc).unwrap(),
                    g.tensor_from_host(&k, rows, kvc).unwrap(),
                    g.tensor_from_host(&v, rows, kvc).unwrap(),
                )
            };
            let got = match &self.rope {
                Some((rope, _)) => g.attention_with_rope(
                    &gq,
                    &gk,
                    &gv,
                    rope,
                    &mut self.gc,
                    &p,
                    start_pos,
                    &self.next.0,
                ),
                None => g.attention(&gq, &gk, &gv, &mut self.gc, &p, start_pos),
            }
            .unwrap();
            assert_eq!((got.rows, got.cols), (rows, qc));
            if check {
                let want = futures::executor::block_on(self.c.to_host(&want))
                    .unwrap()
                    .concat();
                assert_close(
                    &format!("{p:?} at positions {start_pos}..{}", start_pos + rows),
                    &read(g, &got),
                    &want,
                    self.tol,
                );
            }
        }

        /// Prefill of 37 rows, three decode steps, a second chunk of 11 rows, two more decode steps.
        fn prefill_decode_prefill(&mut self) {
            self.step(0, 37, true);
            for pos in 37..40 {
                self.step(pos, 1, true);
            }
            self.step(40, 11, true);
            self.step(51, 1, true);
            self.step(52, 1, true);
        }
    }

    fn params(n_heads: usize, n_kv_heads: usize, head_dim: usize) -> AttentionParams {
        AttentionParams {
            n_heads,
            n_kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            softcap: None,
            window: None,
        }
    }

    /// The f16 path's bound: keys and values rounded to f16 (2⁻¹¹ relative) and multiplied in f16.
    const F16_TOLERANCE: f32 = 4e-3;

    #[test]
    fn f16_cache_and_products_match_the_cpu_within_f16_rounding() {
        let Some(g) = backend_with(GpuOptions::default()) else {
            return;
        };
        if !g.uses_f16() {
            eprintln!("skipping: the adapter has no shader-f16");
            return;
        }
        Twin::new(g, params(6, 2, 40), 128, 3.0).prefill_decode_prefill();
        let Some(g) = backend_with(GpuOptions::default()) else {
            return;
        };
        let p = AttentionParams {
            window: Some(13),
            softcap: Some(50.0),
            ..params(2, 2, 33)
        };
        Twin::new(g, p, 128, 3.0).prefill_decode_prefill();
        let Some(g) = backend_with(GpuOptions::default()) else {
            return;
        };
        let mut t = Twin::new(g, params(4, 2, 32), 640, 3.0);
        t.step(0, 300, true);
        for pos in 300..310 {
            t.step(pos, 1, true);
        }
    }

    #[test]
    fn gqa_prefill_and_decode_match_the_cpu() {
        let Some(g) = backend() else { return };
        Twin::new(g, params(6, 2, 40), 128, 3.0).prefill_decode_prefill();
    }

    #[test]
    fn mqa_with_a_softcap_matches_the_cpu() {
        let Some(g) = backend() else { return };
        // 6 heads over one kv head: a decode workgroup serves 4 of them, the second one only 2.
        let p = AttentionParams {
            scale: 1.0,
            softcap: Some(50.0),
            ..params(6, 1, 40)
        };
        Twin::new(g, p, 128, 4.0).prefill_decode_prefill();
    }

    #[test]
    fn head_dim_256_matches_the_cpu() {
        let Some(g) = backend() else { return };
        let p = AttentionParams {
            softcap: Some(50.0),
            ..params(4, 2, 256)
        };
        Twin::new(g, p, 128, 8.0).prefill_decode_prefill();
        let Some(g) = backend() else { return };
        Twin::new(g, params(2, 1, 256), 128, 1.0).prefill_decode_prefill();
    }

    #[test]
    fn sliding_window_matches_the_cpu() {
        let Some(g) = backend() else { return };
        let p = AttentionParams {
            window: Some(5),
            ..params(6, 2, 40)
        };
        Twin::new(g, p, 128, 3.0).prefill_decode_prefill();
        // Odd head size, a window wider than one prefill block, a softcap.
        let Some(g) = backend() else { return };
        let p = AttentionParams {
            window: Some(13),
            softcap: Some(50.0),
            ..params(2, 2, 33)
        };
        Twin::new(g, p, 128, 3.0).prefill_decode_prefill();
    }

    /// RoPE fused with the append, in both layouts, with q, k and v apart or as windows of one packed tensor,
    /// through a sliding-window ring that wraps (capacity window + 256): a 256-row chunk overwrites the oldest slots.
    #[test]
    fn rope_fused_with_the_append_matches_the_cpu() {
        use crate::config::RopeLayout;
        for layout in [RopeLayout::Adjacent, RopeLayout::SplitHalves] {
            let p = AttentionParams {
                window: Some(5),
                ..params(6, 2, 40)
            };
            for packed in [false, true] {
                let Some(g) = backend() else { return };
                let mut t = Twin::new(g, p, 400, 3.0).with_rope(layout);
                t.packed = packed;
                t.prefill_decode_prefill();
                t.step(53, 256, true);
                t.step(309, 1, true);
            }
        }
    }

    /// With one split, the attention pass also rounds its output for the o projection: for every mode whose blocks
    /// tile a head, the rounding equals the CPU's quantiser applied to the output, bit for bit. Many splits (a long
    /// decode) leave the rounding to its own pass.
    #[test]
    fn attention_rounds_its_output_for_the_o_projection() {
        use crate::backend::gpu::activation_rounding::mode_for;
        use crate::backend::gpu::testing::cpu_rounding;
        let Some(g) = backend() else { return };
        for (head_dim, dtypes) in [
            (
                64,
                &[
                    GgmlType::Q8_0,
                    GgmlType::Q4_1,
                    GgmlType::F16,
                    GgmlType::BF16,
                ][..],
            ),
            (256, &[GgmlType::Q6K][..]),
        ] {
            let p = params(6, 2, head_dim);
            let (qc, kvc) = (6 * head_dim, 2 * head_dim);
            for &dtype in dtypes {
                let mode = mode_for(dtype, qc);
                let spec = KvSpec {
                    n_kv_heads: 2,
                    head_dim,
                    max_positions: 600,
                    window: None,
                };
                let mut cache = g.new_kv_cache(spec).unwrap();
                let inv_freq: Vec<f32> = (0..head_dim / 2).map(|i| 0.9f32.powi(i as i32)).collect();
                let rope = g
                    .rope_table(&inv_freq, crate::config::RopeLayout::SplitHalves)
                    .unwrap();
                // A 37-row prefill, a decode step, then a 300-row prefill and a decode over 338 keys (split).
                for (start, rows, splits) in [
                    (0, 37, false),
                    (37, 1, false),
                    (38, 300, false),
                    (338, 1, true),
                ] {
                    let t = |cols, seed| {
                        g.tensor_from_host(&values(rows * cols, seed), rows, cols)
                            .unwrap()
                    };
                    let (q, k, v) = (
                        t(qc, start as u64),
                        t(kvc, start as u64 + 1),
                        t(kvc, start as u64 + 2),
                    );
                    let (out, rounded) =
                        super::attention(&g, &q, &k, &v, &mut cache, &p, start, Some(&rope), mode)
                            .unwrap();
                    let what = format!("{dtype:?} head {head_dim} at {start}..{}", start + rows);
                    let Some((rounded, sums)) = rounded else {
                        assert!(splits, "{what}: one split, yet no rounding");
                        continue;
                    };
                    assert!(!splits, "{what}: rounded in a split pass");
                    let (want, want_sums) = cpu_rounding(&read(&g, &out), dtype);
                    assert_close(&what, &read(&g, &rounded), &want, 0.0);
                    if let (Some(got), Some(want)) = (sums, want_sums) {
                        assert_close(&format!("{what}: Q8_1 sums"), &read(&g, &got), &want, 0.0);
                    }
                }
            }
        }
    }

    #[test]
    fn long_decode_splits_the_keys() {
        let Some(g) = backend() else { return };
        let mut t = Twin::new(g, params(4, 2, 32), 640, 3.0);
        t.step(0, 100, true);
        for pos in 100..620 {
            let before = t.g.counters().dispatches;
            // Every 10th step, and both sides of the split threshold (256 keys seen at position 255).
            t.step(
                pos,
                1,
                pos % 10 == 0 || (254..259).contains(&pos) || pos == 619,
            );
            // append + attention, plus the combine once the keys are split.
            let want = if pos + 1 > super::SPLIT_KEYS { 3 } else { 2 };
            assert_eq!(
                t.g.counters().dispatches - before,
                want,
                "dispatches of the decode step at {pos}"
            );
        }
    }

    #[test]
    fn sliding_window_ring_wraps() {
        let Some(g) = backend() else { return };
        let p = AttentionParams {
            window: Some(8),
            ..params(4, 1, 40)
        };
        let mut t = Twin::new(g, p, 1024, 3.0);
        assert_eq!(t.gc.capacity, 8 + crate::backend::gpu::MAX_ROWS_PER_FORWARD);
        t.step(0, 200, true);
        for pos in 200..300 {
            t.step(pos, 1, true);
        }
        // A chunk that wraps around the end of the ring, then decode on the far side.
        t.step(300, 50, true);
        for pos in 350..360 {
            t.step(pos, 1, true);
        }
    }

    #[test]
    fn attention_rejects_bad_shapes() {
        let Some(g) = backend() else { return };
        let p = params(4, 2, 8);
        let spec = KvSpec {
            n_kv_heads: 2,
            head_dim: 8,
            max_positions: 16,
            window: None,
        };
        let mut cache = g.new_kv_cache(spec).unwrap();
        let t = |rows, cols| {
            g.tensor_from_host(&values(rows * cols, 7), rows, cols)
                .unwrap()
        };
        let (q, kv) = (t(2, 32), t(2, 16));
        assert!(g.attention(&q, &kv, &kv, &mut cache, &p, 0).is_ok());
        assert!(
            g.attention(&t(2, 24), &kv, &kv, &mut cache, &p, 2).is_err(),
            "q of the wrong width"
        );
        assert!(
            g.attention(&q, &t(1, 16), &kv, &mut cache, &p, 2).is_err(),
            "k of the wrong length"
        );
        assert!(
            g.attention(&q, &kv, &kv, &mut cache, &params(4, 4, 8), 2)
                .is_err(),
            "kv heads unlike the cache"
        );
        assert!(
            g.attention(&q, &kv, &kv, &mut cache, &params(3, 2, 8), 2)
                .is_err(),
            "heads not a multiple"
        );
        assert!(
            g.attention(&q, &kv, &kv, &mut cache, &p, 15).is_err(),
            "past the context"
        );
        let mut big = g
            .new_kv_cache(KvSpec {
                head_dim: 300,
                ..spec
            })
            .unwrap();
        let (q3, kv3) = (t(1, 1200), t(1, 600));
        assert!(
            g.attention(&q3, &kv3, &kv3, &mut big, &params(4, 2, 300), 0)
                .is_err(),
            "head_dim over 256"
        );
    }
}
