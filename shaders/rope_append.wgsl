// RoPE on q and k and the KV-cache append in one pass: q rotated into q_out; k rotated and v copied into the ring
// slot (start_pos + row) % capacity of the cache (KV = f16 where the adapter has shader-f16, else f32).
// Invocations: one per q pair, then one per k pair, then one per v value (rope_common.wgsl, prepended, has the
// angles and layouts).
// Bindings: q [rows, q_heads·2·half], k [rows, kv_row], v [rows, kv_row], inv_freq [half], q_out (like q, dense),
// k_cache [capacity, kv_row], v_cache [capacity, kv_row]; kv_row = kv_heads·2·half. q, k and v may be column
// windows of wider rows (one buffer holding a packed q|k|v product): value (r, c) of q is q[r · q_at.y + q_at.x + c].

enable f16;

struct Params {
    rows: u32,
    q_heads: u32,
    kv_heads: u32,
    half: u32,
    // The first row's position (for angles) and its slot in the ring.
    start_pos: u32,
    start_slot: u32,
    capacity: u32,
    theta_scale: f32,
    // (offset, stride) of each input's rows in its buffer.
    q_at: vec2<u32>,
    k_at: vec2<u32>,
    v_at: vec2<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(5) var<storage, read_write> q_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_cache: array<KV>;
@group(0) @binding(7) var<storage, read_write> v_cache: array<KV>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 256u;
    let q_pairs = p.q_heads * p.half;
    let k_pairs = p.kv_heads * p.half;
    let kv_row = 2u * k_pairs;
    if (id < p.rows * q_pairs) {
        let row = id / q_pairs;
        let i = id % p.half;
        let in_row = (id % q_pairs) / p.half * 2u * p.half + rope_pair(i, p.half);
        let at = vec2<u32>(row * p.q_at.y + p.q_at.x) + in_row;
        let r = rope_rotate(q[at.x], q[at.y], rope_theta(p.start_pos + row, i, p.theta_scale));
        let to = vec2<u32>(row * 2u * q_pairs) + in_row;
        q_out[to.x] = r.x;
        q_out[to.y] = r.y;
        return;
    }
    let kid = id - p.rows * q_pairs;
    if (kid < p.rows * k_pairs) {
        let row = kid / k_pairs;
        let i = kid % p.half;
        let in_row = (kid % k_pairs) / p.half * 2u * p.half + rope_pair(i, p.half);
        let at = vec2<u32>(row * p.k_at.y + p.k_at.x) + in_row;
        let r = rope_rotate(k[at.x], k[at.y], rope_theta(p.start_pos + row, i, p.theta_scale));
        let to = vec2<u32>((p.start_slot + row) % p.capacity * kv_row) + in_row;
        k_cache[to.x] = KV(r.x);
        k_cache[to.y] = KV(r.y);
        return;
    }
    let vid = kid - p.rows * k_pairs;
    if (vid < p.rows * kv_row) {
        let row = vid / kv_row;
        let c = vid % kv_row;
        v_cache[(p.start_slot + row) % p.capacity * kv_row + c] = KV(v[row * p.v_at.y + p.v_at.x + c]);
    }
}
