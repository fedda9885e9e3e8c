// Elementwise ops over n f32 values, one invocation per value.
//   OP 0: out = a + b            OP 1: out = cap * tanh(a / cap)
//   OP 2: out = silu(a) * b      OP 3: out = gelu_tanh(a) * b
//   OP 4: out = gelu_tanh(a) * b as ggml's CPU computes it for GGUF models: through a table of f16 values indexed by
//         f16(a), the identity from 10 up and 0 at -10 and below (f16 rounding emulated with pack2x16float).
// Bindings: a [n], b [n] (ignored by OP 1), out [n].

struct Params {
    n: u32,
    cap: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// tanh through exp of a non-positive argument: WGSL's tanh may overflow to NaN for large |x| on some drivers.
fn stable_tanh(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - e) / (1.0 + e);
}

fn gelu(x: f32) -> f32 {
    let inner = 0.7978845608 * (x + 0.044715 * x * x * x);
    return 0.5 * x * (1.0 + stable_tanh(inner));
}

// x rounded to the nearest f16 (core WGSL, no shader-f16 needed).
fn to_f16(x: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    let x = a[i];
    if (OP == 0u) {
        out[i] = x + b[i];
    } else if (OP == 1u) {
        out[i] = p.cap * stable_tanh(x / p.cap);
    } else if (OP == 2u) {
        out[i] = x / (1.0 + exp(-x)) * b[i];
    } else if (OP == 3u) {
        out[i] = gelu(x) * b[i];
    } else if (x <= -10.0) {
        out[i] = 0.0;
    } else if (x >= 10.0) {
        out[i] = x * b[i];
    } else {
        out[i] = to_f16(gelu(to_f16(x))) * b[i];
    }
}
