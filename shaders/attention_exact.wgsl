// The exact path's attention (GpuOptions::exact; exact.wgsl prepended): backend/cpu/attention.rs `head_impl`
// operation for operation, so the output equals the CPU backend's bit for bit. Three entries over one set of
// bindings, dispatched one after the other:
//   scores   one invocation per (query row, head, visible position): s = ggml_vec_dot_f32(k, q) · scale.
//   softmax  one invocation per (query row, head): the scores' max, then exp(s - max) (ggml_v_expf) in lanes of 8
//            aligned to absolute positions (masked lanes add 0), each chunk's hsum8 added to a float-float sum (ggml
//            sums in double), inv = f32(1 / sum), w = e · inv.
//   output   one invocation per (query row, head, value j): Σ w·v[j] by fused multiply-adds into lane accumulators
//            of absolute positions, in position order: with p.batch (llama.cpp's tinyBLAS kqv: several query rows
//            and head_dim % 4 == 0) 8 lanes (pos % 8) added by hsum8, else ggml_vec_dot_f32's 32 (pos % 32) reduced
//            as GGML_F32x8_REDUCE.
// Query row t sits at position start_pos + t and sees positions lo..=pos, lo = max(pos + 1 - window, 0); position j
// lives in ring slot j % capacity. Query head h reads kv head h / group_size. No softcap: the CPU's tanh is the
// platform's, which no kernel reproduces (such models take the fast path).
// A dispatch covers query rows first_row..first_row + rows (the scratch holds that many); no row sees more than
// span positions.
// Bindings: q [*, n_heads·head_dim] (row t at t · q_at.y + q_at.x), k_cache and v_cache [capacity, kv_row],
// w [rows, n_heads, capacity] (scratch: the score, then the weight, of position pos at pos - lo),
// out [*, n_heads·head_dim] (dense).

struct Params {
    rows: u32,
    first_row: u32,
    n_heads: u32,
    // Query heads per kv head.
    group_size: u32,
    head_dim: u32,
    kv_row: u32,
    start_pos: u32,
    capacity: u32,
    // 0xffffffff: no window.
    window: u32,
    scale: f32,
    // 1: tinyBLAS's 8-lane output sums; 0: ggml_vec_dot_f32's 32 lanes.
    batch: u32,
    // 0, which the compiler cannot know (exact_init).
    zero: u32,
    // (offset, stride) of q's rows in its buffer.
    q_at: vec2<u32>,
    // Positions the scores dispatch covers per (row, head): the most any row of the dispatch sees.
    span: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k_cache: array<f32>;
@group(0) @binding(3) var<storage, read> v_cache: array<f32>;
@group(0) @binding(4) var<storage, read_write> w: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;

// The first position a query at `pos` sees.
fn first_visible(pos: u32) -> u32 {
    if (pos + 1u > p.window) {
        return pos + 1u - p.window;
    }
    return 0u;
}

// ops.rs vec_dot_f32 of the key at k_cache[kb..] and the query at q[qb..]: element i goes to lane i % 32 by fma over
// whole chunks of 32, the lanes reduced as GGML_F32x8_REDUCE, then the tail's products added one at a time, unfused.
fn vec_dot(kb: u32, qb: u32) -> f32 {
    let np = p.head_dim - p.head_dim % 32u;
    // x[l]: (lane l + lane 16 + l) + (lane 8 + l + lane 24 + l), each lane a chain of fmas over the chunks.
    var x: array<f32, 8>;
    for (var l = 0u; l < 8u; l++) {
        var a = vec4<f32>(0.0);
        for (var c = l; c < np; c += 32u) {
            a.x = fma_rn(k_cache[kb + c], q[qb + c], a.x);
            a.y = fma_rn(k_cache[kb + c + 8u], q[qb + c + 8u], a.y);
            a.z = fma_rn(k_cache[kb + c + 16u], q[qb + c + 16u], a.z);
            a.w = fma_rn(k_cache[kb + c + 24u], q[qb + c + 24u], a.w);
        }
        x[l] = (a.x + a.z) + (a.y + a.w);
    }
    var sum = ((x[0] + x[4]) + (x[1] + x[5])) + ((x[2] + x[6]) + (x[3] + x[7]));
    for (var i = np; i < p.head_dim; i++) {
        sum += k_cache[kb + i] * q[qb + i];
    }
    return sum;
}

// 1 - c·(a.x + a.y) as a float-float, for c within a few ulps of 1 / (a.x + a.y): 1 - c·a.x is then exact, and only
// the last few of the ~48 bits are rounded.
fn residual(c: f32, a: vec2<f32>) -> vec2<f32> {
    let hi = two_prod(c, a.x);
    let lo = two_prod(c, a.y);
    let r = two_sum(1.0 - hi.x, -lo.x);
    return two_sum(r.x, (r.y - hi.y) - lo.y);
}

// 1 / (a.x + a.y) correctly rounded to f32, for a positive float-float sum (|a.y| <= ulp(a.x) / 2): ggml's
// (float) (1.0 / sum) of its double sum. Starts from the reciprocal of a.x and steps to the neighbour c on the exact
// reciprocal's side while that lies past the midpoint m of q and c, i.e. while 1 - m·S = (r(q) + r(c)) / 2 has the
// sign of r(q) (ties to even).
fn recip_df(a: vec2<f32>) -> f32 {
    var q = div_rn(1.0, a.x);
    for (var i = 0; i < 3; i++) {
        let r = residual(q, a);
        if (r.x == 0.0) {
            break;
        }
        let c = step_ulp(q, r.x > 0.0);
        let rc = residual(c, a);
        let h = two_sum(r.x, rc.x);
        let m = h.x + (h.y + (r.y + rc.y));
        if (m != 0.0 && (m > 0.0) == (r.x > 0.0)) {
            q = c;
        } else {
            if (m == 0.0 && (bitcast<u32>(c) & 1u) == 0u) {
                q = c;
            }
            break;
        }
    }
    return q;
}

@compute @workgroup_size(WG)
fn scores(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    exact_init(p.zero);
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= p.rows * p.n_heads * p.span) {
        return;
    }
    let i = id % p.span;
    // (t - first_row) · n_heads + h: the scratch row.
    let head = id / p.span;
    let t = p.first_row + head / p.n_heads;
    let h = head % p.n_heads;
    let qpos = p.start_pos + t;
    let lo = first_visible(qpos);
    let pos = lo + i;
    if (pos > qpos) {
        return;
    }
    let qb = t * p.q_at.y + p.q_at.x + h * p.head_dim;
    let kb = pos % p.capacity * p.kv_row + h / p.group_size * p.head_dim;
    w[head * p.capacity + i] = vec_dot(kb, qb) * p.scale;
}

@compute @workgroup_size(WG)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    exact_init(p.zero);
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= p.rows * p.n_heads) {
        return;
    }
    let qpos = p.start_pos + p.first_row + id / p.n_heads;
    let lo = first_visible(qpos);
    let wb = id * p.capacity;

    var m = w[wb];
    for (var pos = lo + 1u; pos <= qpos; pos++) {
        m = max(m, w[wb + pos - lo]);
    }

    // ggml_vec_soft_max_f32: exps in lanes of 8 cells, each chunk reduced and added to the (double) sum.
    var sum = vec2<f32>(0.0);
    for (var chunk = lo - lo % 8u; chunk <= qpos; chunk += 8u) {
        var l: array<f32, 8>;
        for (var j = 0u; j < 8u; j++) {
            let pos = chunk + j;
            l[j] = 0.0;
            if (pos >= lo && pos <= qpos) {
                let e = expf_v(w[wb + pos - lo] - m);
                w[wb + pos - lo] = e;
                l[j] = e;
            }
        }
        sum = df_add(sum, hsum8(l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]));
    }
    let inv = recip_df(sum);
    for (var pos = lo; pos <= qpos; pos++) {
        w[wb + pos - lo] *= inv;
    }
}

// One lane accumulator of the output: w·v over the positions pos ≡ lane (mod period) in lo..=qpos, in order, by fma.
fn lane_sum(lane: u32, period: u32, lo: u32, qpos: u32, wb: u32, vb: u32) -> f32 {
    var a = 0.0;
    for (var pos = lo + (lane + period - lo % period) % period; pos <= qpos; pos += period) {
        a = fma_rn(w[wb + pos - lo], v_cache[pos % p.capacity * p.kv_row + vb], a);
    }
    return a;
}

@compute @workgroup_size(WG)
fn output(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    exact_init(p.zero);
    let id = gid.x + gid.y * nwg.x * WG;
    let d = p.head_dim;
    if (id >= p.rows * p.n_heads * d) {
        return;
    }
    let j = id % d;
    // (t - first_row) · n_heads + h: the scratch row.
    let head = id / d;
    let t = p.first_row + head / p.n_heads;
    let h = head % p.n_heads;
    let qpos = p.start_pos + t;
    let lo = first_visible(qpos);
    let vb = h / p.group_size * d + j;
    let wb = head * p.capacity;
    var o: f32;
    if (p.batch != 0u) {
        var l: array<f32, 8>;
        for (var lane = 0u; lane < 8u; lane++) {
            l[lane] = lane_sum(lane, 8u, lo, qpos, wb, vb);
        }
        o = hsum8(l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]);
    } else {
        // reduce_f32x32: x[l] = (lane l + lane 16 + l) + (lane 8 + l + lane 24 + l), then the 8 as GGML_F32x8_REDUCE.
        var x: array<f32, 8>;
        for (var l = 0u; l < 8u; l++) {
            x[l] = (lane_sum(l, 32u, lo, qpos, wb, vb) + lane_sum(l + 16u, 32u, lo, qpos, wb, vb))
                + (lane_sum(l + 8u, 32u, lo, qpos, wb, vb) + lane_sum(l + 24u, 32u, lo, qpos, wb, vb));
        }
        o = ((x[0] + x[4]) + (x[1] + x[5])) + ((x[2] + x[6]) + (x[3] + x[7]));
    }
    out[(t * p.n_heads + h) * d + j] = o;
}
