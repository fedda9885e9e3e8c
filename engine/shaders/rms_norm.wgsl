// RMSNorm over consecutive groups of `group` values (a row, or one head for QK-norm): one workgroup per group.
//   main:     y = x / sqrt(mean(x²) + eps) * w
//   add_norm: s = x + r; y = s / sqrt(mean(s²) + eps) * w — the residual add fused into the next layer's norm.
// Bindings: x [groups, group], w [group], y [groups, group]; add_norm also r (like x) and s (like x).

struct Params {
    group: u32,
    groups: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> r: array<f32>;
@group(0) @binding(5) var<storage, read_write> s: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, WG>;

// 1 / rms of the group from each invocation's partial sum of squares.
fn inverse_rms(lid: u32, sum: f32) -> f32 {
    partial[lid] = sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    // 1 / sqrt, not inverseSqrt: some drivers (SwiftShader) approximate inverseSqrt coarsely.
    return 1.0 / sqrt(partial[0] / f32(p.group) + p.eps);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.groups) {
        return;
    }
    let base = g * p.group;
    var sum = 0.0;
    for (var i = lid; i < p.group; i += WG) {
        let v = x[base + i];
        sum += v * v;
    }
    let scale = inverse_rms(lid, sum);
    for (var i = lid; i < p.group; i += WG) {
        y[base + i] = x[base + i] * scale * w[i];
    }
}

@compute @workgroup_size(WG)
fn add_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.groups) {
        return;
    }
    let base = g * p.group;
    var sum = 0.0;
    for (var i = lid; i < p.group; i += WG) {
        let v = x[base + i] + r[base + i];
        s[base + i] = v;
        sum += v * v;
    }
    let scale = inverse_rms(lid, sum);
    for (var i = lid; i < p.group; i += WG) {
        y[base + i] = s[base + i] * scale * w[i];
    }
}
