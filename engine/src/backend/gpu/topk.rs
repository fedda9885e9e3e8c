//! The best logits of the last row, found on the device (shaders/topk.wgsl), so sampling reads back k pairs instead
//! of the whole vocabulary.
//!
//! Pass 1: each workgroup keeps the best k of its slice (at least `SLICE` logits) and writes them to a scratch
//! tensor; pass 2: one workgroup keeps the best k of those candidates. A row one workgroup takes whole needs only
//! pass 1. Both passes order by (value descending, id ascending) with NaN as -inf, so the result is exact.

use super::recorder::Access;
use super::{GpuBackend, GpuTensor};
use crate::backend::Backend;
use crate::{Error, Result};

const SOURCE: &str = include_str!("../../../../shaders/topk.wgsl");
const WORKGROUP: usize = 256;
/// Logits one workgroup of pass 1 takes, at least.
const SLICE: usize = 4096;
/// Workgroups of pass 1 at most: pass 2 reads `MAX_GROUPS * k` candidates in one workgroup.
const MAX_GROUPS: usize = 128;
/// The most pairs one call returns (the kernel keeps k rounded up to a power of two in a 1024-entry buffer).
pub(crate) const MAX_K: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    offset: u32,
    slice: u32,
    k: u32,
}

/// The k best (id, logit) pairs of the last row of `logits` `[rows, vocab]`, best first, equal logits by lower id,
/// NaN ranked (and reported) as -inf. The result's 2k u32 words are the pairs (id, f32 bits); when vocab < k the
/// missing pairs have id `u32::MAX`.
pub(crate) fn top_k(b: &GpuBackend, logits: &GpuTensor, k: usize) -> Result<GpuTensor> {
    if k == 0 || k > MAX_K {
        return Err(Error::InvalidArgument(format!(
            "top-k on the GPU takes 1 to {MAX_K} candidates, not {k}"
        )));
    }
    if logits.rows == 0 {
        return Err(Error::Backend("top-k of an empty tensor".into()));
    }
    let vocab = logits.cols;
    // Bind the whole logits buffer and start at the last row, unless it is too big to bind: then copy that row.
    let (row, offset) = if (logits.len() * 4) as u64 > b.rec.ctx.max_binding {
        (b.last_row(logits)?, 0)
    } else {
        (logits.clone(), (logits.rows - 1) * vocab)
    };
    let kp = k.next_power_of_two();
    let slice = vocab
        .div_ceil(MAX_GROUPS)
        .max(SLICE)
        .next_multiple_of(WORKGROUP);
    let groups = vocab.div_ceil(slice).max(1);
    let kernel = |pairs: bool, last: bool| {
        b.rec.kernel(
            "top_k",
            SOURCE,
            &[
                ("PAIRS", pairs.to_string()),
                ("LAST", last.to_string()),
                ("KP", format!("{kp}u")),
            ],
            &[Access::Read, Access::ReadWrite],
        )
    };
    let out = b.tensor(1, 2 * k);
    let first = Params {
        n: vocab as u32,
        offset: offset as u32,
        slice: slice as u32,
        k: k as u32,
    };
    if groups == 1 {
        b.rec.dispatch(
            &kernel(false, true),
            bytemuck::bytes_of(&first),
            &[row.buf(), out.buf()],
            [1, 1, 1],
        )?;
        return Ok(out);
    }
    let scratch = b.tensor(groups, 2 * k);
    b.rec.dispatch(
        &kernel(false, false),
        bytemuck::bytes_of(&first),
        &[row.buf(), scratch.buf()],
        [groups as u32, 1, 1],
    )?;
    let candidates = (groups * k) as u32;
    let second = Params {
        n: candidates,
        offset: 0,
        slice: candidates,
        k: k as u32,
    };
    b.rec.dispatch(
        &kernel(true, true),
        bytemuck::bytes_of(&second),
        &[scratch.buf(), out.buf()],
        [1, 1, 1],
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::top_k;
    use crate::backend::gpu::testing::{backend, backend_with, values};
    use crate::backend::gpu::{GpuBackend, GpuOptions, GpuTensor};
    use crate::backend::Backend;

    /// What top_k must return: (id, f32 bits) sorted by value descending then id ascending, NaN as -inf, padded.
    fn host_top_k(row: &[f32], k: usize) -> Vec<(u32, u32)> {
        let mut all: Vec<(u32, f32)> = row
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, if x.is_nan() { f32::NEG_INFINITY } else { x }))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut want: Vec<(u32, u32)> =
            all.iter().take(k).map(|&(i, x)| (i, x.to_bits())).collect();
        want.resize(k, (u32::MAX, f32::NEG_INFINITY.to_bits()));
        want
    }

    fn pairs(b: &GpuBackend, t: &GpuTensor, k: usize) -> Vec<(u32, u32)> {
        let bytes =
            futures::executor::block_on(b.rec.read(t.buf(), 0, (k * 8) as u64)).expect("readback");
        let words: &[u32] = bytemuck::cast_slice(&bytes);
        words.chunks_exact(2).map(|p| (p[0], p[1])).collect()
    }

    fn check(b: &GpuBackend, what: &str, rows: &[f32], n_rows: usize, k: usize) {
        let cols = rows.len() / n_rows;
        let logits = b.tensor_from_host(rows, n_rows, cols).unwrap();
        let got = pairs(b, &top_k(b, &logits, k).unwrap(), k);
        let want = host_top_k(&rows[(n_rows - 1) * cols..], k);
        if let Some(i) = got.iter().zip(&want).position(|(g, w)| g != w) {
            panic!(
                "{what} (vocab {cols}, k {k}): first mismatch at rank {i}: gpu (id {}, {}) vs host (id {}, {})",
                got[i].0,
                f32::from_bits(got[i].1),
                want[i].0,
                f32::from_bits(want[i].1)
            );
        }
    }

    /// Values rounded to a few levels: long runs of exact ties, across workgroup slices.
    fn levels(n: usize, seed: u64) -> Vec<f32> {
        values(n, seed).iter().map(|v| (v * 3.0).round()).collect()
    }

    #[test]
    fn top_k_matches_a_host_sort() {
        let Some(b) = backend() else { return };
        // Fewer logits than k: padded with id u32::MAX; NaN and -inf tie as -inf, by id.
        let mut small = values(50, 1);
        small[3] = f32::NAN;
        small[7] = f32::NEG_INFINITY;
        small[11] = f32::INFINITY;
        small[13] = -0.0;
        small[17] = 0.0;
        small[19] = -f32::NAN;
        check(&b, "small", &small, 1, 128);
        for k in [1, 5, 128, 256] {
            check(&b, "random", &values(1000, 2), 1, k);
        }
        check(&b, "ties", &levels(1000, 3), 1, 128);
        let mut llama = values(32000 + 37, 4);
        llama[31999] = f32::INFINITY;
        llama[5] = f32::NAN;
        check(&b, "random", &llama, 1, 128);
        check(&b, "ties", &levels(32000 + 37, 5), 1, 128);
        for k in [1, 100, 128, 256] {
            check(&b, "gemma random", &values(262144 + 5, 6), 1, k);
        }
        check(&b, "gemma ties", &levels(262144 + 5, 7), 1, 128);
        check(&b, "all equal", &vec![0.5; 262144 + 5], 1, 128);
        // Every logit beats the ones before it: each one passes the running threshold.
        let ascending: Vec<f32> = (0..262144 + 5).map(|i| i as f32).collect();
        check(&b, "ascending", &ascending, 1, 256);
        let descending: Vec<f32> = (0..262144 + 5).map(|i| -(i as f32)).collect();
        check(&b, "descending", &descending, 1, 128);
        // Mostly NaN and -inf, a few finite: the tail of the result is -inf (NaN reported as -inf) by id.
        let mut sparse: Vec<f32> = (0..20000)
            .map(|i| {
                if i % 2 == 0 {
                    f32::NAN
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        for (j, v) in values(30, 8).into_iter().enumerate() {
            sparse[j * 613 + 7] = v;
        }
        check(&b, "sparse", &sparse, 1, 128);
    }

    #[test]
    fn top_k_reads_the_last_row() {
        let Some(b) = backend() else { return };
        let cols = 32000 + 37;
        let mut rows = vec![100.0; 2 * cols];
        rows.extend(values(cols, 9));
        check(&b, "three rows", &rows, 3, 128);
        let mut one_row = vec![100.0; cols];
        one_row.extend(levels(cols, 10));
        check(&b, "two rows", &one_row, 2, 128);
    }

    #[test]
    fn top_k_copies_a_last_row_too_big_to_bind() {
        let Some(b) = backend_with(GpuOptions {
            max_binding_bytes: Some(1 << 20),
            ..Default::default()
        }) else {
            return;
        };
        let cols = 100_003;
        let mut rows = vec![100.0; 3 * cols];
        rows.extend(values(cols, 11));
        check(&b, "four rows past the binding limit", &rows, 4, 128);
    }

    #[test]
    fn top_k_again_allocates_nothing() {
        let Some(b) = backend() else { return };
        let logits = b
            .tensor_from_host(&values(262144 + 5, 12), 1, 262144 + 5)
            .unwrap();
        let run = || {
            let t = top_k(&b, &logits, 128).unwrap();
            pairs(&b, &t, 128)
        };
        let first = run();
        let before = b.counters();
        let second = run();
        let after = b.counters();
        assert_eq!(first, second);
        assert_eq!(
            after.allocations, before.allocations,
            "the second top-k allocated"
        );
        assert_eq!(after.dispatches - before.dispatches, 2);
        assert_eq!(after.submits - before.submits, 1);
    }

    #[test]
    fn copy_bandwidth_is_positive() {
        let Some(b) = backend() else { return };
        let gbs = futures::executor::block_on(b.measure_copy_bandwidth(4 << 20, 2)).unwrap();
        assert!(gbs.is_finite() && gbs > 0.0, "{gbs} GB/s");
        eprintln!("copy bandwidth (4 MiB): {gbs:.2} GB/s");
    }
}
