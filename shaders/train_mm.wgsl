// op(a) · op(b) for the LoRA matrices (gpu/train_mm.rs): out [m, n] = Σ_k A[i, k] · B[k, j] with A = a, or aᵀ when
// a_t, and B = b, or bᵀ when b_t. One invocation per output value summing k in order: one side of every LoRA product
// is the rank (≤ 64), so there is little to share and a tile would mostly idle.
// a and b may be column windows (split products): element (r, c) at r · stride + offset + c. out is dense.
// Bindings: a ([m, k], or [k, m] when a_t), b ([k, n], or [n, k] when b_t), out [m, n].

// Mirrors `Params` in engine/src/backend/gpu/train_mm.rs.
struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_t: u32,
    b_t: u32,
    _pad: u32,
    a_at: vec2<u32>,
    b_at: vec2<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= p.m * p.n) {
        return;
    }
    let i = idx / p.n;
    let j = idx % p.n;
    // Where A[i, 0] and B[0, j] sit, and how far one step of k moves in each.
    let a0 = p.a_at.x + select(i * p.a_at.y, i, p.a_t != 0u);
    let da = select(1u, p.a_at.y, p.a_t != 0u);
    let b0 = p.b_at.x + select(j, j * p.b_at.y, p.b_t != 0u);
    let db = select(p.b_at.y, 1u, p.b_t != 0u);
    var sum = 0.0;
    for (var t = 0u; t < p.k; t++) {
        sum += a[a0 + t * da] * b[b0 + t * db];
    }
    out[idx] = sum;
}
