// Elementwise ops over n f32 values, one invocation per value.
//   OP 0: out = a + b            OP 1: out = cap * tanh(a / cap)
//   OP 2: out = silu(a) * b      OP 3: out = gelu_tanh(a) * b
//   OP 4: out = gelu_tanh(a) * b as ggml's CPU computes it for GGUF models: through a table of f16 values indexed by
//         f16(a), the identity from 10 up and 0 at -10 and below (f16 rounding emulated with pack2x16float).
//   OP 5: out = silu(a) * b as the CPU backend computes it (ggml_vec_swiglu_f32's 8-lane path): a / (1 +
//         ggml_v_expf(0 - a)) * b, every operation correctly rounded (the exact path; exact.wgsl prepended).
//   OP 6: OP 4 looked up in ggml's own table (the CPU backend's bits; gelu_table_f16 comes from
//         elementwise_gelu_table.wgsl, prepended with binding 6 = the table, on the exact path).
// Bindings: a [n], b [n] (ignored by OP 1), out [n].
// Entry gated_round (OP 2 to 4): out as above, then rounded for the product that reads it next (round_block.wgsl,
// prepended; mode p.mode), one invocation per block. Bindings 4, 5: out_rounded [n], delta [n / 32] (Q8_1 only).

// a and b may be column windows of wider rows (gate and up of one packed product): value i (row i / cols, column
// i % cols) of a sits at a[row · a_at.y + a_at.x + column]; out is dense.

struct Params {
    n: u32,
    cap: f32,
    mode: u32,
    cols: u32,
    a_at: vec2<u32>,
    b_at: vec2<u32>,
    zero: u32,  // 0: exact.wgsl's opaque zero
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> out_rounded: array<f32>;
@group(0) @binding(5) var<storage, read_write> delta: array<f32>;

fn round_src(i: u32) -> f32 {
    return out[i];
}

fn round_dst(i: u32, v: f32) {
    out_rounded[i] = v;
}

fn round_delta(block: u32, v: f32) {
    // Mode 2's d is kept only where a buffer for it is bound (the exact path); otherwise delta is a stand-in.
    if (block < arrayLength(&delta)) {
        delta[block] = v;
    }
}

// tanh through exp of a non-positive argument: WGSL's tanh may overflow to NaN for large |x| on some drivers.
fn stable_tanh(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - e) / (1.0 + e);
}

fn gelu(x: f32) -> f32 {
    let inner = 0.7978845608 * (x + 0.044715 * x * x * x);
    return 0.5 * x * (1.0 + stable_tanh(inner));
}

// OP of value i (to_f16 comes from round_block.wgsl).
fn apply(i: u32) -> f32 {
    let row = i / p.cols;
    let col = i % p.cols;
    let x = a[row * p.a_at.y + p.a_at.x + col];
    let y = b[row * p.b_at.y + p.b_at.x + col];
    if (OP == 0u) {
        return x + y;
    } else if (OP == 1u) {
        return p.cap * stable_tanh(x / p.cap);
    } else if (OP == 2u) {
        return x / (1.0 + exp(-x)) * y;
    } else if (OP == 3u) {
        return gelu(x) * y;
    } else if (OP == 5u) {
        return div_rn(x, 1.0 + expf_v(0.0 - x)) * y;
    } else if (OP == 6u) {
        if (x <= -10.0) {
            return 0.0;
        } else if (x >= 10.0) {
            return x * y;
        }
        return gelu_table_f16(pack2x16float(vec2<f32>(x, 0.0)) & 0xffffu) * y;
    } else if (x <= -10.0) {
        return 0.0;
    } else if (x >= 10.0) {
        return x * y;
    }
    return to_f16(gelu(to_f16(x))) * y;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    exact_init(p.zero);
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n) {
        out[i] = apply(i);
    }
}

@compute @workgroup_size(64)
fn gated_round(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    exact_init(p.zero);
    let block = gid.x + gid.y * nwg.x * 64u;
    let size = round_block_size(p.mode);
    if (block * size >= p.n) {
        return;
    }
    for (var i = block * size; i < (block + 1u) * size; i++) {
        out[i] = apply(i);
    }
    round_block(p.mode, block);
}
