// A LoRA term added to a product's output, in two passes (gpu/lora.rs launches them):
//   down: t[r, j] = Σ_i x[r, i] · a[j, i]          one workgroup per (row r, rank j), reducing over the inputs
//   up:   y[r, o] += scale · Σ_j t[r, j] · b_t[j, o]  one invocation per output value, in place (neighbouring
//         invocations read neighbouring values of b_t, which is B transposed)
// Bindings: x [rows, cols] (a column window: element (r, i) at r · x_stride + x_offset + i), a [rank, cols],
// t [rows, rank], b_t [rank, outputs], y [rows, outputs]. Both entries bind all five; each uses its three.

struct Params {
    rows: u32,
    cols: u32,
    rank: u32,
    outputs: u32,
    scale: f32,
    x_offset: u32,
    x_stride: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> t: array<f32>;
@group(0) @binding(4) var<storage, read> b_t: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(64)
fn down(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // Uniform across the workgroup, so the barriers below are reached by all or none.
    let pair = wid.x + wid.y * nwg.x;
    let valid = pair < p.rows * p.rank;
    let r = pair / max(p.rank, 1u);
    let j = pair % max(p.rank, 1u);
    var sum = 0.0;
    if (valid) {
        let x0 = r * p.x_stride + p.x_offset;
        let a0 = j * p.cols;
        for (var i = lid; i < p.cols; i += WG) {
            sum += x[x0 + i] * a[a0 + i];
        }
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            partial[lid] += partial[lid + half];
        }
        workgroupBarrier();
    }
    if (valid && lid == 0u) {
        t[r * p.rank + j] = partial[0];
    }
}

@compute @workgroup_size(64)
fn up(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.rows * p.outputs) {
        return;
    }
    let r = i / p.outputs;
    let o = i % p.outputs;
    var sum = 0.0;
    for (var j = 0u; j < p.rank; j++) {
        sum += t[r * p.rank + j] * b_t[j * p.outputs + o];
    }
    y[i] += p.scale * sum;
}
