// Rotary position embedding of [rows, heads, 2·half] for positions start_pos + row; one invocation per pair
// (rope_common.wgsl, prepended, has the angles and layouts).
// Bindings: x [rows, heads·2·half], inv_freq [half], y (same shape as x).

struct Params {
    rows: u32,
    heads: u32,
    half: u32,
    start_pos: u32,
    theta_scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 256u;
    let pairs_per_row = p.heads * p.half;
    if (id >= p.rows * pairs_per_row) {
        return;
    }
    let row = id / pairs_per_row;
    let i = id % p.half;
    let at = vec2<u32>(row * pairs_per_row * 2u + (id % pairs_per_row) / p.half * 2u * p.half) + rope_pair(i, p.half);
    let r = rope_rotate(x[at.x], x[at.y], rope_theta(p.start_pos + row, i, p.theta_scale));
    y[at.x] = r.x;
    y[at.y] = r.y;
}
