// Rounds activations the way ggml's CPU quantises them before a product with a weight of a given type, so a GGUF
// model on the GPU follows llama.cpp's numerics (x' = what ggml's integer dot product effectively multiplies by):
//   MODE 1: Q8_0 / Q8_1 blocks of 32 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights): q = round_even(x · 127 / amax),
//           x' = q · f16(amax / 127)
//   MODE 2: Q8_K blocks of 256 (K-quants): with `max` the value of largest magnitude, iscale = -127 / max,
//           q = min(round_even(iscale · x), 127), x' = q / iscale
//   MODE 3: f16(x) (F16 weights)          MODE 4: bf16(x), round to nearest even (BF16 weights)
// One invocation per block (per value for MODES 3 and 4).
// Bindings: x [n], y [n].

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn to_f16(v: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
}

fn to_bf16(v: f32) -> f32 {
    let b = bitcast<u32>(v);
    let rounded = (b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u;
    return bitcast<f32>(rounded);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 64u;
    if (MODE >= 3u) {
        if (id < p.n) {
            y[id] = select(to_bf16(x[id]), to_f16(x[id]), MODE == 3u);
        }
        return;
    }
    let size = select(256u, 32u, MODE == 1u);
    let base = id * size;
    if (base >= p.n) {
        return;
    }
    var amax = 0.0;
    var max = 0.0;
    for (var i = 0u; i < size; i++) {
        let v = x[base + i];
        if (abs(v) > amax) {
            amax = abs(v);
            max = v;
        }
    }
    if (amax == 0.0) {
        for (var i = 0u; i < size; i++) {
            y[base + i] = 0.0;
        }
        return;
    }
    if (MODE == 1u) {
        let d = to_f16(amax / 127.0);
        let inv = 127.0 / amax;
        for (var i = 0u; i < size; i++) {
            y[base + i] = clamp(round(x[base + i] * inv), -128.0, 127.0) * d;
        }
    } else {
        let iscale = -127.0 / max;
        let d = 1.0 / iscale;
        for (var i = 0u; i < size; i++) {
            y[base + i] = min(round(iscale * x[base + i]), 127.0) * d;
        }
    }
}

// Q8_1 (Q4_1 and Q5_1 weights): x' as MODE 1, and per block delta = f16(d · Σq) - f16(d) · Σq with the unrounded
// d = amax / 127. ggml adds m · f16(d · Σq) per block where Σ x' gives m · f16(d) · Σq; q8_1_correction.wgsl adds
// m · delta. One invocation per block. Binding 3: delta [n / 32].
@group(0) @binding(3) var<storage, read_write> delta: array<f32>;

@compute @workgroup_size(64)
fn q8_1(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let block = gid.x + gid.y * nwg.x * 64u;
    let base = block * 32u;
    if (base >= p.n) {
        return;
    }
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(x[base + i]));
    }
    let d = amax / 127.0;
    let d16 = to_f16(d);
    let inv = select(0.0, 127.0 / amax, amax != 0.0);
    var sum = 0i;
    for (var i = 0u; i < 32u; i++) {
        let q = clamp(round(x[base + i] * inv), -128.0, 127.0);
        sum += i32(q);
        y[base + i] = q * d16;
    }
    delta[block] = to_f16(d * f32(sum)) - d16 * f32(sum);
}
