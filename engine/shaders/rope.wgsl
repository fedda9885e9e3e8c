// Rotary position embedding of [rows, heads, 2·half] for positions start_pos + row; one invocation per pair.
// ADJACENT pairs (2i, 2i+1) are llama GGUF's layout (the converter permuted q/k); otherwise (i, i + half), HF's.
// Bindings: x [rows, heads·2·half], inv_freq [half], y (same shape as x).

struct Params {
    rows: u32,
    heads: u32,
    half: u32,
    start_pos: u32,
    // > 0: angles as ggml builds them, theta_0 = pos, theta_{i+1} = theta_i · theta_scale (each product rounded);
    // 0: theta_i = pos · inv_freq[i] (tables with llama3 frequency factors folded in).
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
    let in_row = id % pairs_per_row;
    let head = in_row / p.half;
    let i = in_row % p.half;
    let base = row * pairs_per_row * 2u + head * 2u * p.half;
    var a = base + i;
    var b = base + i + p.half;
    if (ADJACENT) {
        a = base + 2u * i;
        b = a + 1u;
    }
    var theta = f32(p.start_pos + row);
    if (p.theta_scale > 0.0) {
        for (var j = 0u; j < i; j++) {
            theta *= p.theta_scale;
        }
    } else {
        theta *= inv_freq[i];
    }
    let c = cos(theta);
    let s = sin(theta);
    let x0 = x[a];
    let x1 = x[b];
    // The rotation as llama.cpp's build contracts it into fused multiply-adds.
    y[a] = fma(x0, c, -(x1 * s));
    y[b] = fma(x0, s, x1 * c);
}
