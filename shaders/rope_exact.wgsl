// The exact path's RoPE and KV-cache append (GpuOptions::exact; exact.wgsl prepended): the CPU backend's bits.
// WGSL's cos and sin are not the CPU's (our port of glibc's cosf/sinf), so the angles come from a table the host
// fills with the CPU's own rope_angles; each pair is rotated as llama.cpp's build contracts it,
// (fma(x0, c, -(x1·s)), fma(x0, s, x1·c)), with the correctly rounded fma_rn.
// Invocations, in segments: one per q pair (q rotated into q_out); then, with ROTATE, one per k pair (k rotated
// into ring slot (start_slot + row) % capacity of k_cache), else one per k value (copied there); then one per v
// value (copied into v_cache likewise). kv_heads = 0 leaves only the q segment: a plain RoPE of q's heads.
// Bindings: q [rows, q_heads·2·half], k [rows, kv_row], v [rows, kv_row], table [positions, half] of (cos, sin),
// q_out [rows, q_heads·2·half] (dense), k_cache [capacity, kv_row], v_cache [capacity, kv_row]; kv_row =
// kv_heads·head_dim (head_dim = 2·half with ROTATE). q, k and v may be column windows of wider rows (a packed
// q|k|v product): value (r, c) of q is q[r · q_at.y + q_at.x + c].
// Defines: ROTATE (bool; false: no RoPE, k and v are only appended, q_heads = 0), ADJACENT (bool): pairs (2i, 2i+1)
// (llama GGUF's layout) rather than (i, i + half).

struct Params {
    rows: u32,
    q_heads: u32,
    kv_heads: u32,
    half: u32,
    // The first row's position (for the table) and its slot in the ring.
    start_pos: u32,
    start_slot: u32,
    capacity: u32,
    // Values of one cached row (kv_heads · head_dim).
    kv_row: u32,
    // (offset, stride) of each input's rows in its buffer.
    q_at: vec2<u32>,
    k_at: vec2<u32>,
    v_at: vec2<u32>,
    // 0, which the compiler cannot know (exact_init).
    zero: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> q_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(7) var<storage, read_write> v_cache: array<f32>;

// Offsets of pair i inside a head of 2·half values.
fn pair(i: u32) -> vec2<u32> {
    if (ADJACENT) {
        return vec2<u32>(2u * i, 2u * i + 1u);
    }
    return vec2<u32>(i, i + p.half);
}

// ops.rs rotate: (x0, x1) by the angle whose (cos, sin) is cs.
fn rotate(x0: f32, x1: f32, cs: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(fma_rn(x0, cs.x, -(x1 * cs.y)), fma_rn(x0, cs.y, x1 * cs.x));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    exact_init(p.zero);
    let id = gid.x + gid.y * nwg.x * 256u;
    let q_pairs = p.q_heads * p.half;
    if (id < p.rows * q_pairs) {
        let row = id / q_pairs;
        let i = id % p.half;
        let in_row = (id % q_pairs) / p.half * 2u * p.half + pair(i);
        let at = vec2<u32>(row * p.q_at.y + p.q_at.x) + in_row;
        let r = rotate(q[at.x], q[at.y], table[(p.start_pos + row) * p.half + i]);
        let to = vec2<u32>(row * 2u * q_pairs) + in_row;
        q_out[to.x] = r.x;
        q_out[to.y] = r.y;
        return;
    }
    var kid = id - p.rows * q_pairs;
    if (ROTATE) {
        let k_pairs = p.kv_heads * p.half;
        if (kid < p.rows * k_pairs) {
            let row = kid / k_pairs;
            let i = kid % p.half;
            let in_row = (kid % k_pairs) / p.half * 2u * p.half + pair(i);
            let at = vec2<u32>(row * p.k_at.y + p.k_at.x) + in_row;
            let r = rotate(k[at.x], k[at.y], table[(p.start_pos + row) * p.half + i]);
            let to = vec2<u32>((p.start_slot + row) % p.capacity * p.kv_row) + in_row;
            k_cache[to.x] = r.x;
            k_cache[to.y] = r.y;
            return;
        }
        kid -= p.rows * k_pairs;
    } else if (kid < p.rows * p.kv_row) {
        let row = kid / p.kv_row;
        let c = kid % p.kv_row;
        k_cache[(p.start_slot + row) % p.capacity * p.kv_row + c] = k[row * p.k_at.y + p.k_at.x + c];
        return;
    } else {
        kid -= p.rows * p.kv_row;
    }
    if (kid < p.rows * p.kv_row) {
        let row = kid / p.kv_row;
        let c = kid % p.kv_row;
        v_cache[(p.start_slot + row) % p.capacity * p.kv_row + c] = v[row * p.v_at.y + p.v_at.x + c];
    }
}
