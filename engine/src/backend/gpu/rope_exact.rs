//! The exact path's RoPE (shaders/rope_exact.wgsl): q and k rotated as the CPU backend rotates them, bit for bit,
//! with k and v appended to the KV cache in the same pass.
//!
//! The CPU takes each angle's cosine and sine from our port of glibc's cosf/sinf, which WGSL's cos and sin do not
//! reproduce; so the host computes them once with the CPU's own `rope_angles` into a table of every position the
//! context can reach, and the kernel only looks them up.

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuBuf, GpuKvCache, GpuRope, GpuTensor};
use crate::backend::cpu::ops::rope_angles;
use crate::backend::AttentionParams;
use crate::config::RopeLayout;
use crate::{Error, Result};
use std::cell::RefCell;
use std::rc::Rc;

const SOURCE: &str = concat!(
    include_str!("../../../../shaders/exact.wgsl"),
    include_str!("../../../../shaders/rope_exact.wgsl")
);
const WORKGROUP: usize = 256;

/// `Params` in rope_exact.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    q_heads: u32,
    kv_heads: u32,
    half: u32,
    start_pos: u32,
    start_slot: u32,
    capacity: u32,
    kv_row: u32,
    q_at: [u32; 2],
    k_at: [u32; 2],
    v_at: [u32; 2],
    zero: u32,
    _pad: u32,
}

/// A RoPE table's (cos, sin) of every pair at positions 0..positions, `[positions, half]`, on the GPU: built on
/// first use by the exact path (the fast path never pays for it), rebuilt only for a longer context.
pub(crate) struct Table {
    inv_freq: Vec<f32>,
    built: RefCell<Option<Built>>,
}

struct Built {
    buf: Rc<GpuBuf>,
    positions: usize,
}

impl Table {
    pub(crate) fn new(inv_freq: &[f32]) -> Self {
        Self {
            inv_freq: inv_freq.to_vec(),
            built: RefCell::new(None),
        }
    }
}

/// The table of `rope` covering positions 0..needed, built for `want` (≥ needed) positions if it does not.
fn table(b: &GpuBackend, rope: &GpuRope, needed: usize, want: usize) -> Result<Rc<GpuBuf>> {
    let t = &rope.exact;
    if let Some(built) = t.built.borrow().as_ref() {
        if built.positions >= needed {
            return Ok(built.buf.clone());
        }
    }
    let positions = want.max(needed).max(1);
    let half = t.inv_freq.len();
    let bytes = (positions * half * 8) as u64;
    let ctx = &b.rec.ctx;
    if bytes > ctx.max_binding.min(ctx.max_buffer) {
        return Err(Error::Backend(format!(
            "the exact path's RoPE table for {positions} positions needs {bytes} bytes, more than the GPU adapter {} \
             binds; use a shorter context",
            ctx.summary
        )));
    }
    let mut values = vec![0f32; positions * half * 2];
    let (mut cos, mut sin) = (vec![0f32; half], vec![0f32; half]);
    for (pos, row) in values.chunks_exact_mut(2 * half.max(1)).enumerate() {
        rope_angles(&t.inv_freq, rope.theta_scale, pos, &mut cos, &mut sin);
        for i in 0..half {
            row[2 * i] = cos[i];
            row[2 * i + 1] = sin[i];
        }
    }
    let buf = Rc::new(b.storage_buffer(bytemuck::cast_slice(&values), "rope table"));
    *t.built.borrow_mut() = Some(Built {
        buf: buf.clone(),
        positions,
    });
    Ok(buf)
}

fn adjacent(rope: Option<&GpuRope>) -> String {
    rope.is_some_and(|r| r.layout == RopeLayout::Adjacent)
        .to_string()
}

fn kernel(b: &GpuBackend, rope: Option<&GpuRope>) -> Rc<super::recorder::Kernel> {
    let mut access = [Access::Read; 7];
    access[4..].fill(Access::ReadWrite);
    b.rec.kernel(
        "rope_exact",
        SOURCE,
        &[
            ("ROTATE", rope.is_some().to_string()),
            ("ADJACENT", adjacent(rope)),
        ],
        &access,
    )
}

/// Backend::rope on the exact path: `x` (`[rows, heads·2·half]`, dense) rotated for positions start_pos...
pub(crate) fn rope(
    b: &GpuBackend,
    x: &GpuTensor,
    rope: &GpuRope,
    heads: usize,
    start_pos: usize,
) -> Result<GpuTensor> {
    let end = start_pos + x.rows;
    // Without a cache to size it by, the table at least doubles when it grows.
    let grown = rope
        .exact
        .built
        .borrow()
        .as_ref()
        .map_or(0, |t| 2 * t.positions);
    let table = table(b, rope, end, grown)?;
    let out = b.tensor(x.rows, x.cols);
    let (x_buf, x_at) = x.window();
    let params = Params {
        rows: x.rows as u32,
        q_heads: heads as u32,
        kv_heads: 0,
        half: rope.half as u32,
        start_pos: start_pos as u32,
        start_slot: 0,
        capacity: 1,
        kv_row: 0,
        q_at: [x_at.offset, x_at.stride],
        k_at: [0; 2],
        v_at: [0; 2],
        zero: 0,
        _pad: 0,
    };
    // The k and v segments are empty: x stands in for their inputs, out for the cache.
    let bufs = [
        x_buf,
        x_buf,
        x_buf,
        &*table,
        out.buf(),
        out.buf(),
        out.buf(),
    ];
    let pairs = x.rows * heads * rope.half;
    b.rec.dispatch(
        &kernel(b, Some(rope)),
        bytemuck::bytes_of(&params),
        &bufs,
        grid(pairs.div_ceil(WORKGROUP) as u32),
    )?;
    Ok(out)
}

/// With `rope`: rotates q (returned, dense) and k, and records the rotated k and v into their ring slots, in one
/// pass. Without: only records k and v, and returns q itself. q, k and v may be column windows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rope_append(
    b: &GpuBackend,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    cache: &GpuKvCache,
    p: &AttentionParams,
    start_pos: usize,
    rope: Option<&GpuRope>,
) -> Result<GpuTensor> {
    let rows = q.rows;
    let kv_row = p.n_kv_heads * p.head_dim;
    let (q_out, table, half, q_heads) = match rope {
        Some(rope) => {
            if 2 * rope.half != p.head_dim {
                return Err(Error::Backend(format!(
                    "RoPE table for head size {} used on heads of {}",
                    2 * rope.half,
                    p.head_dim
                )));
            }
            // Built for the whole context at the first call: later steps add no buffer.
            let table = table(b, rope, start_pos + rows, cache.spec.max_positions)?;
            (b.tensor(rows, q.cols), Some(table), rope.half, p.n_heads)
        }
        None => (q.clone(), None, 0, 0),
    };
    let ((q_buf, q_at), (k_buf, k_at), (v_buf, v_at)) = (q.window(), k.window(), v.window());
    let params = Params {
        rows: rows as u32,
        q_heads: q_heads as u32,
        kv_heads: p.n_kv_heads as u32,
        half: half as u32,
        start_pos: start_pos as u32,
        start_slot: (start_pos % cache.capacity) as u32,
        capacity: cache.capacity as u32,
        kv_row: kv_row as u32,
        q_at: [q_at.offset, q_at.stride],
        k_at: [k_at.offset, k_at.stride],
        v_at: [v_at.offset, v_at.stride],
        zero: 0,
        _pad: 0,
    };
    // Without RoPE nothing reads the table or writes q_out: q's buffer and the v cache stand in.
    let (table_bind, q_out_bind) = match &table {
        Some(t) => (&**t, q_out.buf()),
        None => (q_buf, &cache.v),
    };
    let bufs = [
        q_buf, k_buf, v_buf, table_bind, q_out_bind, &cache.k, &cache.v,
    ];
    // q pairs, then k pairs (or values), then v values.
    let k_items = if rope.is_some() { kv_row / 2 } else { kv_row };
    let invocations = rows * (q_heads * half + k_items + kv_row);
    b.rec.dispatch(
        &kernel(b, rope),
        bytemuck::bytes_of(&params),
        &bufs,
        grid(invocations.div_ceil(WORKGROUP) as u32),
    )?;
    Ok(q_out)
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::CpuBackend;
    use crate::backend::gpu::testing::{assert_same_bits, exact_backend, read, values};
    use crate::backend::Backend;
    use crate::config::RopeLayout;

    /// Backend::rope on the exact path, in both layouts, near and far positions, geometric frequencies (angles by
    /// repeated products) and others (pos · inv_freq).
    #[test]
    fn exact_rope_matches_the_cpu_bit_for_bit() {
        let Some(g) = exact_backend() else { return };
        let c = CpuBackend::new();
        let (rows, heads, half) = (7, 3, 20);
        let geometric: Vec<f32> = (0..half)
            .map(|i| 10000f32.powf(-2.0 * i as f32 / (2 * half) as f32))
            .collect();
        // llama3-style factors folded in: no longer a geometric series.
        let scaled: Vec<f32> = geometric
            .iter()
            .enumerate()
            .map(|(i, f)| if i > half / 2 { f / 8.0 } else { *f })
            .collect();
        let x = values(rows * heads * 2 * half, 3);
        for inv_freq in [&geometric, &scaled] {
            for layout in [RopeLayout::Adjacent, RopeLayout::SplitHalves] {
                let (gr, cr) = (
                    g.rope_table(inv_freq, layout).unwrap(),
                    c.rope_table(inv_freq, layout).unwrap(),
                );
                // The table grows on the way: built for 7 positions, then for 1007 and more.
                for start in [0, 1000, 3, 5000] {
                    let gt = g.tensor_from_host(&x, rows, heads * 2 * half).unwrap();
                    let got = read(&g, &g.rope(&gt, &gr, heads, start).unwrap());
                    let cx = candle_core::Tensor::from_slice(
                        &x,
                        (rows, heads * 2 * half),
                        &candle_core::Device::Cpu,
                    )
                    .unwrap();
                    let want = c.rope(&cx, &cr, heads, start).unwrap();
                    let want = futures::executor::block_on(c.to_host(&want))
                        .unwrap()
                        .concat();
                    assert_same_bits(&format!("rope {layout:?} at {start}"), &got, &want);
                }
            }
        }
    }
}
