// Appended to attention.wgsl (rope_common.wgsl prepended) for a decode step whose keys fit one split: the
// workgroup of a kv head rotates its queries as it loads them, rotates the step's key into the cache slot p.slot
// and copies its value there, so RoPE and the append need no pass of their own. Every workgroup of a kv head
// writes the same key and value before it reads them. q, k_new and v_new may be column windows of one packed
// q|k|v row (p.q_at, p.k_at, p.v_at: offset and stride).
// Bindings: k_new [1, kv_row], v_new [1, kv_row], inv_freq [HEAD_DIM / 2].

@group(0) @binding(5) var<storage, read> k_new: array<f32>;
@group(0) @binding(6) var<storage, read> v_new: array<f32>;
@group(0) @binding(7) var<storage, read> inv_freq: array<f32>;

fn load_queries(row0: u32, gh0: u32, kv_head: u32, lid: u32) {
    let half = HEAD_DIM / 2u;
    let theta_of = p.start_pos;
    for (var t = lid; t < NQ * half; t += WG) {
        let qi = t / half;
        let i = t % half;
        let gh = gh0 + qi % HB;
        let at = rope_pair(i, half);
        var r = vec2<f32>(0.0);
        if (gh < p.group_size) {
            let base = p.q_at.x + (kv_head * p.group_size + gh) * HEAD_DIM;
            r = rope_rotate(q[base + at.x], q[base + at.y], rope_theta(theta_of, i, p.theta_scale));
        }
        qs[qi * HEAD_DIM + at.x] = r.x;
        qs[qi * HEAD_DIM + at.y] = r.y;
    }
    let cache_base = p.slot * p.kv_row + kv_head * HEAD_DIM;
    let k_base = p.k_at.x + kv_head * HEAD_DIM;
    for (var i = lid; i < half; i += WG) {
        let at = rope_pair(i, half);
        let r = rope_rotate(k_new[k_base + at.x], k_new[k_base + at.y], rope_theta(theta_of, i, p.theta_scale));
        k_cache[cache_base + at.x] = KV(r.x);
        k_cache[cache_base + at.y] = KV(r.y);
    }
    for (var c = lid; c < HEAD_DIM; c += WG) {
        v_cache[cache_base + c] = KV(v_new[p.v_at.x + kv_head * HEAD_DIM + c]);
    }
    storageBarrier();
}
