// Causal (optionally sliding-window) attention over a ring KV cache, with an online softmax in f32.
//
// A workgroup serves RB consecutive query rows × HB query heads that share one kv head (prefill: 8 rows × 1 head;
// decode: 1 row × up to 4 heads of a GQA group), over one split of the keys those rows see. Keys go through in
// tiles of WG: thread t scores key t of the tile against every query of the block (each key row is read once),
// the block's running max and the threads' partial sums are updated, then every thread accumulates Σ p·v for its
// output dims (lid, lid + WG, ...).
//   Query row r sits at position start_pos + r and sees key positions j with j <= pos and pos - j < window; key j
//   lives in cache slot j % capacity. score = (q·k)·scale, then cap·tanh(score / cap) when has_softcap.
//   With splits == 1, dst is the output [rows, n_heads·HEAD_DIM]. Otherwise the workgroup of split s takes keys
//   lo + s·chunk .. lo + (s + 1)·chunk - 1 (lo: the first key the block sees) and writes (max, sum, unnormalised
//   Σ p·v) to dst as scratch [rows, n_heads, splits, HEAD_DIM + 2], which attention_combine.wgsl merges.
// Grid: x = kv head · head blocks + head block, y = row block, z = split.
// Bindings: q [rows, n_heads·HEAD_DIM], k_cache [capacity, kv_row], v_cache [capacity, kv_row], dst (see above).
// Appended: attention_round.wgsl (one split also rounds its output) or attention_no_round.wgsl, and
// attention_rope.wgsl (a decode step also rotates q and k and appends k and v) or attention_no_rope.wgsl.
// Defines: HEAD_DIM, RB, HB, WG (a power of two), KV: the cache's element type. With KV = f16 (adapters with
// shader-f16) the products q·k and p·v are f16 multiplies; sums, softmax and the output stay f32.

enable f16;

struct Params {
    rows: u32,
    n_heads: u32,
    // Query heads per kv head.
    group_size: u32,
    kv_row: u32,
    start_pos: u32,
    capacity: u32,
    // 0xffffffff: no window.
    window: u32,
    splits: u32,
    chunk: u32,
    scale: f32,
    softcap: f32,
    has_softcap: u32,
    // attention_rope.wgsl only: RoPE's theta_scale (see rope_common.wgsl), the step's ring slot, and (offset,
    // stride) of q's, the new key's and the new value's rows in their buffers.
    theta_scale: f32,
    slot: u32,
    q_at: vec2<u32>,
    k_at: vec2<u32>,
    v_at: vec2<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
// Written only by attention_rope.wgsl's prologue.
@group(0) @binding(2) var<storage, read_write> k_cache: array<KV>;
@group(0) @binding(3) var<storage, read_write> v_cache: array<KV>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

// Queries of one workgroup, and output dims of one thread.
const NQ = RB * HB;
const DPT = (HEAD_DIM + WG - 1u) / WG;
// "No score": below every real score; exp(NONE - m) is 0 for any real m.
const NONE: f32 = -1.0e30;

var<workgroup> qs: array<f32, NQ * HEAD_DIM>;
// Probabilities of the current tile, [query][key].
var<workgroup> ps: array<f32, NQ * WG>;
var<workgroup> red: array<f32, NQ * WG>;

// tanh through exp of a non-positive argument: WGSL's tanh may overflow to NaN for large |x| on some drivers.
fn stable_tanh(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - e) / (1.0 + e);
}

// Tree reduction of red[qi·WG ..][..WG] for every query at once (max or sum); the result lands in red[qi·WG].
fn reduce_block(lid: u32, take_max: bool) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            for (var qi = 0u; qi < NQ; qi++) {
                let a = red[qi * WG + lid];
                let b = red[qi * WG + lid + stride];
                red[qi * WG + lid] = select(a + b, max(a, b), take_max);
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head_blocks = (p.group_size + HB - 1u) / HB;
    let kv_head = wid.x / head_blocks;
    // First head (within the group) and first row of the block.
    let gh0 = (wid.x % head_blocks) * HB;
    let row0 = wid.y * RB;
    let split = wid.z;
    let kv_off = kv_head * HEAD_DIM;

    // Keys some query of the block sees: from the first row's window start to the last row's position.
    let first_pos = p.start_pos + row0;
    let last_pos = p.start_pos + min(row0 + RB, p.rows) - 1u;
    let lo = select(0u, first_pos + 1u - p.window, first_pos >= p.window);
    let klo = lo + split * p.chunk;
    let khi = select(last_pos, min(last_pos, klo + p.chunk - 1u), p.splits > 1u);

    load_queries(row0, gh0, kv_head, lid);

    // Running max per query (the same in every thread), this thread's share of the running sum, its output dims.
    var m: array<f32, NQ>;
    var l: array<f32, NQ>;
    var acc: array<f32, NQ * DPT>;
    for (var qi = 0u; qi < NQ; qi++) {
        m[qi] = NONE;
    }
    workgroupBarrier();

    for (var t0 = klo; t0 <= khi; t0 += WG) {
        // Scores of key t0 + lid.
        let j = t0 + lid;
        var s: array<f32, NQ>;
        for (var qi = 0u; qi < NQ; qi++) {
            s[qi] = NONE;
        }
        if (j <= khi) {
            let kbase = (j % p.capacity) * p.kv_row + kv_off;
            var qk: array<f32, NQ>;
            for (var i = 0u; i < HEAD_DIM; i++) {
                let kx = k_cache[kbase + i];
                for (var qi = 0u; qi < NQ; qi++) {
                    qk[qi] += f32(KV(qs[qi * HEAD_DIM + i]) * kx);
                }
            }
            for (var qi = 0u; qi < NQ; qi++) {
                let pos = first_pos + qi / HB;
                let visible = row0 + qi / HB < p.rows && gh0 + qi % HB < p.group_size && j <= pos && pos - j < p.window;
                if (visible) {
                    var x = qk[qi] * p.scale;
                    if (p.has_softcap != 0u) {
                        x = stable_tanh(x * (1.0 / p.softcap)) * p.softcap;
                    }
                    s[qi] = x;
                }
            }
        }
        for (var qi = 0u; qi < NQ; qi++) {
            red[qi * WG + lid] = s[qi];
        }
        reduce_block(lid, true);

        // New running max; rescale what came before, weigh this tile's keys.
        var alpha: array<f32, NQ>;
        for (var qi = 0u; qi < NQ; qi++) {
            let m_new = max(m[qi], red[qi * WG]);
            alpha[qi] = exp(m[qi] - m_new);
            var pr = 0.0;
            if (s[qi] > NONE) {
                pr = exp(s[qi] - m_new);
            }
            ps[qi * WG + lid] = pr;
            l[qi] = l[qi] * alpha[qi] + pr;
            m[qi] = m_new;
        }
        for (var c = 0u; c < DPT; c++) {
            for (var qi = 0u; qi < NQ; qi++) {
                acc[qi * DPT + c] *= alpha[qi];
            }
        }
        workgroupBarrier();

        let n = min(WG, khi + 1u - t0);
        for (var jj = 0u; jj < n; jj++) {
            let vbase = ((t0 + jj) % p.capacity) * p.kv_row + kv_off;
            for (var c = 0u; c < DPT; c++) {
                let i = lid + c * WG;
                if (i < HEAD_DIM) {
                    let vx = v_cache[vbase + i];
                    for (var qi = 0u; qi < NQ; qi++) {
                        acc[qi * DPT + c] += f32(KV(ps[qi * WG + jj]) * vx);
                    }
                }
            }
        }
        // The next tile writes ps only after the barriers of its reduction, which every thread reaches after this
        // loop; red[qi·WG] was read by every thread before the barrier above.
    }

    for (var qi = 0u; qi < NQ; qi++) {
        red[qi * WG + lid] = l[qi];
    }
    reduce_block(lid, false);

    for (var qi = 0u; qi < NQ; qi++) {
        let row = row0 + qi / HB;
        let gh = gh0 + qi % HB;
        if (row >= p.rows || gh >= p.group_size) {
            continue;
        }
        let total = red[qi * WG];
        let hrow = row * p.n_heads + kv_head * p.group_size + gh;
        if (p.splits == 1u) {
            let inv = select(0.0, 1.0 / total, total > 0.0);
            for (var c = 0u; c < DPT; c++) {
                let i = lid + c * WG;
                if (i < HEAD_DIM) {
                    dst[hrow * HEAD_DIM + i] = acc[qi * DPT + c] * inv;
                }
            }
        } else {
            let base = (hrow * p.splits + split) * (HEAD_DIM + 2u);
            if (lid == 0u) {
                dst[base] = m[qi];
                dst[base + 1u] = total;
            }
            for (var c = 0u; c < DPT; c++) {
                let i = lid + c * WG;
                if (i < HEAD_DIM) {
                    dst[base + 2u + i] = acc[qi * DPT + c];
                }
            }
        }
    }
    if (p.splits == 1u) {
        round_heads(row0, gh0, kv_head, lid);
    }
}
