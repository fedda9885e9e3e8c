// Causal self-attention of one sequence for training, forward (train_attention_common.wgsl prepended): out and the
// log-sum-exp of each row's scores, all the backward needs to rebuild the probabilities. One workgroup per (row i,
// head h) walks the visible keys WG at a time with an online softmax: each invocation scores one key of the tile,
// then every invocation rescales and accumulates its SLOTS values of the head from the tile's probabilities (the
// running max and sum are computed alike by all, in the same order, so they agree without a broadcast).
// Bindings: out [rows, heads · d], lse [rows, heads].

@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;

var<workgroup> scores: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // Uniform across the workgroup, so the loop below (and its barriers) is the same for every invocation.
    let idx = wid.x + wid.y * nwg.x;
    let live = idx < p.rows * p.heads;
    let i = min(idx / p.heads, p.rows - 1u);
    let h = idx % p.heads;
    let kvh = h / (p.heads / p.kv_heads);
    var m = NONE;
    var l = 0.0;
    var acc: array<f32, SLOTS>;
    for (var j0 = first_key(i); j0 <= i; j0 += WG) {
        let j = j0 + lid;
        var s = NONE;
        if (live && j <= i) {
            s = score(i, h, j);
        }
        scores[lid] = s;
        workgroupBarrier();
        let n = min(WG, i + 1u - j0);
        var tile_max = m;
        for (var t = 0u; t < n; t++) {
            tile_max = max(tile_max, scores[t]);
        }
        let alpha = exp(m - tile_max);
        l *= alpha;
        for (var slot = 0u; slot < SLOTS; slot++) {
            acc[slot] *= alpha;
        }
        for (var t = 0u; t < n; t++) {
            let pt = exp(scores[t] - tile_max);
            l += pt;
            let vo = kv_at(j0 + t, kvh);
            for (var slot = 0u; slot < SLOTS; slot++) {
                let c = lid + WG * slot;
                if (c < p.d) {
                    acc[slot] += pt * v[vo + c];
                }
            }
        }
        m = tile_max;
        workgroupBarrier();
    }
    if (!live) {
        return;
    }
    for (var slot = 0u; slot < SLOTS; slot++) {
        let c = lid + WG * slot;
        if (c < p.d) {
            out[q_at(i, h) + c] = acc[slot] / l;
        }
    }
    if (lid == 0u) {
        lse[i * p.heads + h] = m + log(l);
    }
}
