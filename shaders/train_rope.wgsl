// The backward pass of RoPE (gpu/train_rope.rs; rope_common.wgsl prepended for the angles and layouts): each pair
// of dy rotated by −θ, the transpose of the forward's rotation by θ at positions 0..rows. One invocation per pair.
// Bindings: dy [rows, heads·2·half], inv_freq [half], dx (like dy).

// Mirrors `Params` in engine/src/backend/gpu/train_rope.rs.
struct Params {
    rows: u32,
    heads: u32,
    half: u32,
    theta_scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    let pairs_per_row = p.heads * p.half;
    if (id >= p.rows * pairs_per_row) {
        return;
    }
    let row = id / pairs_per_row;
    let i = id % p.half;
    let head = (id % pairs_per_row) / p.half;
    let at = vec2<u32>(row * pairs_per_row * 2u + head * 2u * p.half) + rope_pair(i, p.half);
    let theta = rope_theta(row, i, p.theta_scale);
    let c = cos(theta);
    let s = sin(theta);
    let d0 = dy[at.x];
    let d1 = dy[at.y];
    dx[at.x] = d0 * c + d1 * s;
    dx[at.y] = d1 * c - d0 * s;
}
