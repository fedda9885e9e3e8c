// Training's elementwise ops over [rows, cols] f32 tensors, one invocation per value (gpu/train_ops.rs launches them;
// train_tanh.wgsl is prepended). PyTorch's formulas in f32, as the CPU twin (backend/cpu/train.rs) computes them.
//   OP 0: out = a + s · b                                   add_scaled
//   OP 1: out = act(a) · b                                  gated_f32 (ACT 0: SiLU, 1: GELU with tanh)
//   OP 2: out = c · b · act'(a), out2 = c · act(a)          gated_backward (a gate, b up, c d out)
//   OP 3: out = b · (1 − (a / s)²)                          softcap_backward (a the softcap's output, b d out, s cap)
//   OP 4: out = a                                           a copy (concat_cols' pieces, dense copies of windows)
// Operands are addressed through (offset, stride): element (r, c) at r · stride + offset + c, so column windows of a
// packed product are read in place and concat_cols writes each piece into a window of its output.
// Entry group_dot: out[g] = Σ a · b over consecutive groups of `group` values of dense a and b (attention's backward
// D = dout · out per row and head).
// Bindings: a, b, c [rows, cols] (unused ones bound to any buffer), out, out2 [rows, cols] (out2: OP 2 only).

// Mirrors `Params` in engine/src/backend/gpu/train_ops.rs.
struct Params {
    rows: u32,
    cols: u32,
    s: f32,
    group: u32,
    a_at: vec2<u32>,
    b_at: vec2<u32>,
    c_at: vec2<u32>,
    out_at: vec2<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> out2: array<f32>;

const WG: u32 = 256u;

// act(x) and act'(x).
fn activation(x: f32) -> vec2<f32> {
    if (ACT == 0u) {
        let s = 1.0 / (1.0 + exp(-x));
        return vec2<f32>(x * s, s * (1.0 + x * (1.0 - s)));
    }
    let k = 0.7978846;  // √(2/π), as the CPU twin rounds it
    let q = 0.044715;
    let t = tanh_f32(k * (x + q * x * x * x));
    return vec2<f32>(0.5 * x * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * q * x * x));
}

fn at(loc: vec2<u32>, r: u32, col: u32) -> u32 {
    return r * loc.y + loc.x + col;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.rows * p.cols) {
        return;
    }
    let r = i / p.cols;
    let col = i % p.cols;
    let o = at(p.out_at, r, col);
    let x = a[at(p.a_at, r, col)];
    if (OP == 4u) {
        out[o] = x;
        return;
    }
    let y = b[at(p.b_at, r, col)];
    if (OP == 0u) {
        out[o] = x + p.s * y;
    } else if (OP == 1u) {
        out[o] = activation(x).x * y;
    } else if (OP == 2u) {
        let d = c[at(p.c_at, r, col)];
        let f = activation(x);
        out[o] = d * y * f.y;
        out2[o] = d * f.x;
    } else {
        let t = x / p.s;
        out[o] = y * (1.0 - t * t);
    }
}

@compute @workgroup_size(WG)
fn group_dot(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = gid.x + gid.y * nwg.x * WG;
    if (g >= p.rows * p.cols / p.group) {
        return;
    }
    var sum = 0.0;
    for (var k = g * p.group; k < (g + 1u) * p.group; k++) {
        sum += a[k] * b[k];
    }
    out[g] = sum;
}
