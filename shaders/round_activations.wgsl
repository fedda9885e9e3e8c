// Activations rounded as ggml's CPU quantises them for a weight type (round_block.wgsl, prepended, says how).
// One invocation per block (per value for modes 3 and 4); MODE is the rounding mode.
// Bindings: x [n], y [n]; MODE 5 also delta [n / 32], MODE 2 (exact path) delta [n / 256] (Q8_K's d).

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> delta: array<f32>;

fn round_src(i: u32) -> f32 {
    return x[i];
}

fn round_dst(i: u32, v: f32) {
    y[i] = v;
}

fn round_delta(block: u32, v: f32) {
    // Mode 2's d is kept only where a buffer for it is bound (the exact path); otherwise delta is a stand-in.
    if ((MODE == 5u || MODE == 2u) && block < arrayLength(&delta)) {
        delta[block] = v;
    }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let block = gid.x + gid.y * nwg.x * 64u;
    if (block * round_block_size(MODE) < p.n) {
        round_block(MODE, block);
    }
}
