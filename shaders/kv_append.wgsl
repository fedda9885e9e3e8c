// Appends keys and values to a ring KV cache: the value at (row r, column c) goes to slot (start_pos + r) % capacity.
// One invocation per value, k and v together. The cache holds KV (f16 where the adapter has shader-f16, else f32).
// Bindings: k [rows, kv_row], v [rows, kv_row], k_cache [capacity, kv_row], v_cache [capacity, kv_row]
// (kv_row = n_kv_heads·head_dim).

enable f16;

struct Params {
    n: u32,
    kv_row: u32,
    capacity: u32,
    start_pos: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<KV>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<KV>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    let row = i / p.kv_row;
    let slot = (p.start_pos + row) % p.capacity;
    let at = slot * p.kv_row + i % p.kv_row;
    k_cache[at] = KV(k[i]);
    v_cache[at] = KV(v[i]);
}
