// The backward pass of RMSNorm over consecutive groups of `group` values (whole rows, or heads for QK-norm), one
// workgroup per group (gpu/train_norm.rs). With y = x · r · w and r = (mean(x²) + eps)^(−1/2):
//   dx = r · (w · dy) − x · r³ · mean(x · w · dy)
// Both means are reduced together by a tree in workgroup memory. x and dy may be column windows (q and k before
// QK-norm are windows of one packed product): element (row, c) at row · stride + offset + c. dx is dense.
// Bindings: x [rows, cols], w [group], dy [rows, cols], dx [rows, cols].

// Mirrors `Params` in engine/src/backend/gpu/train_norm.rs.
struct Params {
    group: u32,
    groups: u32,
    cols: u32,
    eps: f32,
    x_at: vec2<u32>,
    dy_at: vec2<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<vec2<f32>, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // Uniform across the workgroup, so every invocation reaches the barriers.
    let g = wid.x + wid.y * nwg.x;
    let live = g < p.groups;
    let first = g * p.group;
    let row = first / p.cols;
    let x0 = row * p.x_at.y + p.x_at.x + first % p.cols;
    let d0 = row * p.dy_at.y + p.dy_at.x + first % p.cols;
    // (Σ x², Σ x · w · dy) of this invocation's values.
    var sums = vec2<f32>(0.0);
    if (live) {
        for (var i = lid; i < p.group; i += WG) {
            let v = x[x0 + i];
            sums += vec2<f32>(v * v, v * w[i] * dy[d0 + i]);
        }
    }
    partial[lid] = sums;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (!live) {
        return;
    }
    let n = f32(p.group);
    let r = 1.0 / sqrt(partial[0].x / n + p.eps);
    let proj = partial[0].y / n;
    for (var i = lid; i < p.group; i += WG) {
        dx[first + i] = r * (w[i] * dy[d0 + i]) - x[x0 + i] * r * r * r * proj;
    }
}
