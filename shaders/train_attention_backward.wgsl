// The backward pass of train_attention.wgsl (train_attention_common.wgsl prepended), FlashAttention's way: the
// probabilities are rebuilt from lse, p_ij = exp(score_ij − lse_i). With D_i = dout_i · out_i (delta, computed
// before by train_elementwise.wgsl's group_dot): dp = dout_i · v_j, ds = p (dp − D_i), dz = ds · (1 − (s / cap)²)
// (or ds) · scale, and dq_i = Σ_j dz k_j, dk_j = Σ_i dz q_i, dv_j = Σ_i p dout_i.
// Each output has one owner, so nothing is accumulated across workgroups (no races, a fixed order):
//   dq:  one workgroup per (row i, head h) over its visible keys, WG at a time;
//   dkv: one workgroup per (key j, kv head) over every head sharing the kv head, then the rows that see j.
// In both, each invocation first takes one partner of the tile (its dz, and p) into workgroup memory, then adds up
// its SLOTS values of the head over the tile.
// Bindings: lse [rows, heads], dout [rows, heads · d], delta [rows, heads], then dq [rows, heads · d] (entry dq), or
// dk and dv [rows, kv_heads · d] (entry dkv).

@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> dout: array<f32>;
@group(0) @binding(6) var<storage, read> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> grad_a: array<f32>;
@group(0) @binding(8) var<storage, read_write> grad_b: array<f32>;

var<workgroup> tile_p: array<f32, WG>;
var<workgroup> tile_dz: array<f32, WG>;

// (p, dz) of row i, head h and key j.
fn pair_grads(i: u32, h: u32, j: u32) -> vec2<f32> {
    let s = score(i, h, j);
    let pr = exp(s - lse[i * p.heads + h]);
    let qo = q_at(i, h);
    let vo = kv_at(j, h / (p.heads / p.kv_heads));
    var dp = 0.0;
    for (var c = 0u; c < p.d; c++) {
        dp += dout[qo + c] * v[vo + c];
    }
    var dz = pr * (dp - delta[i * p.heads + h]);
    if (p.cap > 0.0) {
        let t = s / p.cap;
        dz *= 1.0 - t * t;
    }
    return vec2<f32>(pr, dz * p.scale);
}

@compute @workgroup_size(WG)
fn dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
      @builtin(local_invocation_index) lid: u32) {
    let idx = wid.x + wid.y * nwg.x;
    let live = idx < p.rows * p.heads;
    let i = min(idx / p.heads, p.rows - 1u);
    let h = idx % p.heads;
    let kvh = h / (p.heads / p.kv_heads);
    var acc: array<f32, SLOTS>;
    for (var j0 = first_key(i); j0 <= i; j0 += WG) {
        let j = j0 + lid;
        var dz = 0.0;
        if (live && j <= i) {
            dz = pair_grads(i, h, j).y;
        }
        tile_dz[lid] = dz;
        workgroupBarrier();
        let n = min(WG, i + 1u - j0);
        for (var t = 0u; t < n; t++) {
            let ko = kv_at(j0 + t, kvh);
            let g = tile_dz[t];
            for (var slot = 0u; slot < SLOTS; slot++) {
                let c = lid + WG * slot;
                if (c < p.d) {
                    acc[slot] += g * k[ko + c];
                }
            }
        }
        workgroupBarrier();
    }
    if (!live) {
        return;
    }
    for (var slot = 0u; slot < SLOTS; slot++) {
        let c = lid + WG * slot;
        if (c < p.d) {
            grad_a[q_at(i, h) + c] = acc[slot];
        }
    }
}

@compute @workgroup_size(WG)
fn dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let idx = wid.x + wid.y * nwg.x;
    let live = idx < p.rows * p.kv_heads;
    let j = min(idx / p.kv_heads, p.rows - 1u);
    let kvh = idx % p.kv_heads;
    let group = p.heads / p.kv_heads;
    let last = last_query(j);
    var dk: array<f32, SLOTS>;
    var dv: array<f32, SLOTS>;
    for (var h = kvh * group; h < (kvh + 1u) * group; h++) {
        for (var i0 = j; i0 <= last; i0 += WG) {
            let i = i0 + lid;
            var g = vec2<f32>(0.0);
            if (live && i <= last) {
                g = pair_grads(i, h, j);
            }
            tile_p[lid] = g.x;
            tile_dz[lid] = g.y;
            workgroupBarrier();
            let n = min(WG, last + 1u - i0);
            for (var t = 0u; t < n; t++) {
                let qo = q_at(i0 + t, h);
                let pt = tile_p[t];
                let dz = tile_dz[t];
                for (var slot = 0u; slot < SLOTS; slot++) {
                    let c = lid + WG * slot;
                    if (c < p.d) {
                        dv[slot] += pt * dout[qo + c];
                        dk[slot] += dz * q[qo + c];
                    }
                }
            }
            workgroupBarrier();
        }
    }
    if (!live) {
        return;
    }
    for (var slot = 0u; slot < SLOTS; slot++) {
        let c = lid + WG * slot;
        if (c < p.d) {
            grad_a[kv_at(j, kvh) + c] = dk[slot];
            grad_b[kv_at(j, kvh) + c] = dv[slot];
        }
    }
}
