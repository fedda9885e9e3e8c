// The per-block sum term ggml uses with Q8_1 activations (see round_activations.wgsl, entry q8_1):
//   out[r, first_row + o] += Σ_b m[o, b] · delta[r, b], m = the f16 min at byte 2 of each Q4_1 / Q5_1 block.
// One invocation per (activation row r, weight row o of this chunk).
// Bindings: w (the chunk, bytes), delta [rows, blocks], out [rows, out_stride].

struct Params {
    rows: u32,
    chunk_rows: u32,
    first_row: u32,
    out_stride: u32,
    row_bytes: u32,
    blocks: u32,
    block_bytes: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> delta: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// The 16 bits at an even byte offset.
fn w16(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 2u) * 8u)) & 0xffffu;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 64u;
    if (id >= p.rows * p.chunk_rows) {
        return;
    }
    let r = id / p.chunk_rows;
    let o = id % p.chunk_rows;
    var sum = 0.0;
    for (var b = 0u; b < p.blocks; b++) {
        let m = unpack2x16float(w16(o * p.row_bytes + b * p.block_bytes + 2u)).x;
        sum += m * delta[r * p.blocks + b];
    }
    let at = r * p.out_stride + p.first_row + o;
    out[at] += sum;
}
