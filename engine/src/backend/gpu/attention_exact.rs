//! The exact path's attention (GpuOptions::exact): RoPE and the KV append (rope_exact.rs), then
//! shaders/attention_exact.wgsl's three passes: every score (one per query row, head and visible position) into a
//! scratch tensor, the softmax of each (row, head) in place, then the weighted sum of values per output value. Every operation is the CPU backend's (cpu/attention.rs), in
//! its order, so the output is its bits.
//!
//! Slower than the fast path by design: no online softmax, no tiles shared across heads, a software fma.

use super::activation_rounding::{mode_for, round_for, Q8_1};
use super::recorder::{grid, Access};
use super::{rope_exact, GpuBackend, GpuKvCache, GpuRope, GpuTensor};
use crate::backend::AttentionParams;
use crate::quant::GgmlType;
use crate::{Error, Result};

const SOURCE: &str = concat!(
    include_str!("../../../../shaders/exact.wgsl"),
    include_str!("../../../../shaders/attention_exact.wgsl")
);
/// attention_exact.wgsl's WG.
const WORKGROUP: usize = 64;

/// `Params` in attention_exact.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    first_row: u32,
    n_heads: u32,
    group_size: u32,
    head_dim: u32,
    kv_row: u32,
    start_pos: u32,
    capacity: u32,
    window: u32,
    scale: f32,
    batch: u32,
    zero: u32,
    q_at: [u32; 2],
    span: u32,
    _pad: u32,
}

/// A weight type whose products round activations in round_block.wgsl's `mode` (any one: the rounding depends on
/// the mode alone).
fn dtype_for_mode(mode: u32) -> Option<GgmlType> {
    let dtype = match mode {
        1 => GgmlType::Q8_0,
        Q8_1 => GgmlType::Q4_1,
        2 => GgmlType::Q6K,
        3 => GgmlType::F16,
        4 => GgmlType::BF16,
        _ => return None,
    };
    Some(dtype)
}

/// The output, and (with a rounding mode) the output rounded for the product that reads it, with Q8_1's sums.
type Attended = (GpuTensor, Option<(GpuTensor, Option<GpuTensor>)>);

/// attention.rs `attention` on the exact path, after its checks (same arguments, same result). Models with a
/// softcap do not come here: the CPU's tanh is the platform's libm, which no kernel reproduces.
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
) -> Result<Attended> {
    if p.softcap.is_some() || b.rec.ctx.f16 {
        return Err(Error::Backend(
            "the exact attention runs without a softcap, on an f32 KV cache".into(),
        ));
    }
    let (rows, hq, d) = (q.rows, p.n_heads, p.head_dim);
    let out = b.tensor(rows, hq * d);
    if rows == 0 {
        return Ok((out, None));
    }
    let q = rope_exact::rope_append(b, q, k, v, cache, p, start_pos, rope)?;

    // The scratch holds a query row's weights for every slot of the ring (the same size every decode step); a
    // long prefill goes through in as many rows per dispatch as one binding holds.
    let ctx = &b.rec.ctx;
    let limit = ctx.max_binding.min(ctx.max_buffer) as usize;
    let row_bytes = hq * cache.capacity * 4;
    if row_bytes > limit {
        return Err(Error::Backend(format!(
            "the exact attention's scratch for {hq} heads over {} positions is more than the GPU adapter {} binds; \
             use a shorter context",
            cache.capacity, ctx.summary
        )));
    }
    let chunk = (limit / row_bytes).min(rows);
    let w = b.tensor(chunk * hq, cache.capacity);
    let access = [
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ];
    let [scores, softmax, output] = ["scores", "softmax", "output"].map(|entry| {
        b.rec
            .kernel_entry("attention_exact", SOURCE, entry, &[], &access)
    });
    let (q_buf, q_at) = q.window();
    let bufs = [q_buf, &cache.k, &cache.v, w.buf(), out.buf()];
    for first_row in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - first_row);
        // The last row of the dispatch sees the most positions.
        let last = start_pos + first_row + n;
        let span = p.window.map_or(last, |w| w.min(last)).min(cache.capacity);
        let params = Params {
            rows: n as u32,
            first_row: first_row as u32,
            n_heads: hq as u32,
            group_size: (hq / p.n_kv_heads) as u32,
            head_dim: d as u32,
            kv_row: (p.n_kv_heads * d) as u32,
            start_pos: start_pos as u32,
            capacity: cache.capacity as u32,
            window: p
                .window
                .map_or(u32::MAX, |w| w.min(u32::MAX as usize) as u32),
            scale: p.scale,
            // llama.cpp's kqv goes through tinyBLAS when there are several queries and the head size suits its tiles.
            batch: (rows > 1 && d.is_multiple_of(4)) as u32,
            zero: 0,
            q_at: [q_at.offset, q_at.stride],
            span: span as u32,
            _pad: 0,
        };
        let params = bytemuck::bytes_of(&params);
        b.rec.dispatch(
            &scores,
            params,
            &bufs,
            grid((n * hq * span).div_ceil(WORKGROUP) as u32),
        )?;
        b.rec.dispatch(
            &softmax,
            params,
            &bufs,
            grid((n * hq).div_ceil(WORKGROUP) as u32),
        )?;
        b.rec.dispatch(
            &output,
            params,
            &bufs,
            grid((n * hq * d).div_ceil(WORKGROUP) as u32),
        )?;
    }

    // The o projection's rounding of the output, by the fast path's own kernel (round_for).
    let Some(dtype) = round
        .and_then(dtype_for_mode)
        .filter(|&dtype| mode_for(dtype, out.cols) == round)
    else {
        return Ok((out, None));
    };
    let (rounded, sums) = round_for(b, &out, dtype)?;
    Ok((out, Some((rounded, sums))))
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::CpuBackend;
    use crate::backend::gpu::testing::{
        assert_same_bits, cpu_rounding, exact_backend, read, values,
    };
    use crate::backend::gpu::{GpuBackend, GpuKvCache, GpuRope, GpuWeight};
    use crate::backend::{AttentionParams, Backend, KvSpec};
    use crate::config::RopeLayout;
    use crate::quant::GgmlType;

    type Cpu = CpuBackend;

    /// One attention layer on the exact GPU path and on the CPU backend, fed the same queries, keys and values.
    struct Twin {
        g: GpuBackend,
        c: Cpu,
        gc: GpuKvCache,
        cc: <Cpu as Backend>::KvCache,
        p: AttentionParams,
        rope: Option<(GpuRope, <Cpu as Backend>::Rope)>,
        /// The product the output feeds (F32: nothing rounded).
        next: (GpuWeight, <Cpu as Backend>::Weight),
        /// q, k and v reach the GPU as column windows of one packed q|k|v tensor.
        packed: bool,
    }

    impl Twin {
        fn new(
            p: AttentionParams,
            max_positions: usize,
            layout: Option<RopeLayout>,
        ) -> Option<Self> {
            let g = exact_backend()?;
            let c = CpuBackend::new();
            let spec = KvSpec {
                n_kv_heads: p.n_kv_heads,
                head_dim: p.head_dim,
                max_positions,
                window: p.window,
            };
            let half = p.head_dim / 2;
            // SmolLM2's frequencies (base 10000): a geometric series, so both sides build the angles as ggml does.
            let inv_freq: Vec<f32> = (0..half)
                .map(|i| 10000f32.powf(-2.0 * i as f32 / (2 * half) as f32))
                .collect();
            let rope = layout.map(|layout| {
                (
                    g.rope_table(&inv_freq, layout).unwrap(),
                    c.rope_table(&inv_freq, layout).unwrap(),
                )
            });
            let qc = p.n_heads * p.head_dim;
            let zeros = vec![0u8; qc * 4];
            let next = (
                g.upload_weight("o", GgmlType::F32, [1, qc], &zeros)
                    .unwrap(),
                c.upload_weight("o", GgmlType::F32, [1, qc], &zeros)
                    .unwrap(),
            );
            Some(Self {
                gc: g.new_kv_cache(spec).unwrap(),
                cc: c.new_kv_cache(spec).unwrap(),
                g,
                c,
                p,
                rope,
                next,
                packed: false,
            })
        }

        /// Positions start_pos..start_pos + rows through both; the outputs must be the same bits.
        fn step(&mut self, start_pos: usize, rows: usize) {
            let p = self.p;
            let (qc, kvc) = (p.n_heads * p.head_dim, p.n_kv_heads * p.head_dim);
            let seed = 7000 + start_pos as u64 * 3;
            let q: Vec<f32> = values(rows * qc, seed).iter().map(|x| x * 3.0).collect();
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
                let all: Vec<f32> = (0..rows)
                    .flat_map(|r| {
                        [
                            &q[r * qc..][..qc],
                            &k[r * kvc..][..kvc],
                            &v[r * kvc..][..kvc],
                        ]
                        .concat()
                    })
                    .collect();
                let packed = g.tensor_from_host(&all, rows, qc + 2 * kvc).unwrap();
                let mut parts = g.split_cols(&packed, &[qc, kvc, kvc]).unwrap().into_iter();
                (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                )
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
            let want = futures::executor::block_on(self.c.to_host(&want))
                .unwrap()
                .concat();
            assert_same_bits(
                &format!(
                    "{p:?}, rope {:?}, packed {}, positions {start_pos}..{}",
                    self.rope.as_ref().map(|r| r.0.layout),
                    self.packed,
                    start_pos + rows
                ),
                &read(g, &got),
                &want,
            );
        }

        /// A 37-row prefill, decode steps across the lane boundaries of 8 and 32 (37 → 66), an 11-row chunk from a
        /// position that is no multiple of 8, two more decode steps.
        fn prefill_decode_prefill(&mut self) {
            self.step(0, 37);
            for pos in 37..66 {
                self.step(pos, 1);
            }
            self.step(66, 11);
            self.step(77, 1);
            self.step(78, 1);
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

    /// SmolLM2's attention shape (9 query heads over 3 kv heads of 64) in both RoPE layouts.
    #[test]
    fn exact_gqa_with_rope_matches_the_cpu_bit_for_bit() {
        for layout in [RopeLayout::SplitHalves, RopeLayout::Adjacent] {
            let Some(mut t) = Twin::new(params(9, 3, 64), 128, Some(layout)) else {
                return;
            };
            t.prefill_decode_prefill();
        }
    }

    /// Heads of 48 (ggml_vec_dot_f32's unfused tail of 16), a sliding window shorter than the sequence, q, k and v
    /// as windows of one packed tensor, with and without RoPE.
    #[test]
    fn exact_window_and_odd_head_match_the_cpu_bit_for_bit() {
        let p = AttentionParams {
            window: Some(13),
            ..params(4, 2, 48)
        };
        for (layout, packed) in [
            (Some(RopeLayout::SplitHalves), true),
            (None, false),
            (None, true),
        ] {
            let Some(mut t) = Twin::new(p, 128, layout) else {
                return;
            };
            t.packed = packed;
            t.prefill_decode_prefill();
        }
    }

    /// A sliding-window ring that wraps (capacity window + 256): a 256-row chunk overwrites the oldest slots, then
    /// decode on the far side; head size 40 (tinyBLAS's 8 lanes in prefill, 32 in decode; a tail of 8 in q·k).
    #[test]
    fn exact_ring_wrap_matches_the_cpu_bit_for_bit() {
        let p = AttentionParams {
            window: Some(5),
            ..params(6, 2, 40)
        };
        let Some(mut t) = Twin::new(p, 400, Some(RopeLayout::Adjacent)) else {
            return;
        };
        t.packed = true;
        t.step(0, 37);
        t.step(37, 1);
        t.step(38, 15);
        t.step(53, 256);
        for pos in 309..313 {
            t.step(pos, 1);
        }
    }

    /// With a rounding mode the output also comes back rounded for the o projection, as the CPU's quantiser would.
    #[test]
    fn exact_attention_rounds_its_output_for_the_o_projection() {
        let Some(g) = exact_backend() else { return };
        let p = params(6, 2, 64);
        let (qc, kvc) = (6 * 64, 2 * 64);
        let spec = KvSpec {
            n_kv_heads: 2,
            head_dim: 64,
            max_positions: 64,
            window: None,
        };
        for dtype in [GgmlType::Q8_0, GgmlType::Q4_1] {
            let mut cache = g.new_kv_cache(spec).unwrap();
            let inv_freq: Vec<f32> = (0..32).map(|i| 0.9f32.powi(i)).collect();
            let rope = g.rope_table(&inv_freq, RopeLayout::SplitHalves).unwrap();
            let mode = crate::backend::gpu::activation_rounding::mode_for(dtype, qc);
            for (start, rows) in [(0, 13), (13, 1)] {
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
                let (rounded, sums) = rounded.expect("a rounded output");
                let what = format!("{dtype:?} at {start}..{}", start + rows);
                let (want, want_sums) = cpu_rounding(&read(&g, &out), dtype);
                assert_same_bits(&what, &read(&g, &rounded), &want);
                if let (Some(got), Some(want)) = (sums, want_sums) {
                    assert_same_bits(&format!("{what}: Q8_1 sums"), &read(&g, &got), &want);
                }
            }
        }
    }

    /// After the first steps a decode step creates nothing: the RoPE table was built for the whole context, the
    /// scratch is the same size every step.
    #[test]
    fn exact_decode_allocates_nothing() {
        let Some(t) = Twin::new(params(9, 3, 64), 128, Some(RopeLayout::SplitHalves)) else {
            return;
        };
        let Twin {
            g,
            mut gc,
            p,
            rope,
            next,
            ..
        } = t;
        let rope = rope.unwrap().0;
        let (qc, kvc) = (9 * 64, 3 * 64);
        for pos in 0..6 {
            let t = |cols, seed| g.tensor_from_host(&values(cols, seed), 1, cols).unwrap();
            let (q, k, v) = (t(qc, pos), t(kvc, pos + 100), t(kvc, pos + 200));
            let before = g.counters();
            let out = g
                .attention_with_rope(&q, &k, &v, &rope, &mut gc, &p, pos as usize, &next.0)
                .unwrap();
            read(&g, &out);
            if pos >= 3 {
                assert_eq!(
                    g.counters().since(&before).allocations,
                    0,
                    "allocations of the step at {pos}"
                );
            }
        }
    }
}
