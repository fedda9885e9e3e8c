// Embedding gather: out[t, i] = W[ids[t], i] · scale, dequantised (quant.wgsl, prepended), for the ids that fall in
// this chunk's rows [first_row, first_row + chunk_rows); the other chunks' dispatches write the rest.
// One invocation per (token, 8-value part of a unit).
// Bindings: w (chunk of the weight, bytes), ids [ids_offset + rows], out [rows, cols].

@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 256u;
    let items = p.units * 4u;
    if (idx >= p.rows * items) {
        return;
    }
    let t = idx / items;
    let it = idx % items;
    let id = ids[p.ids_offset + t];
    if (id < p.first_row || id - p.first_row >= p.chunk_rows) {
        return;
    }
    let u = it >> 2u;
    let part = it & 3u;
    let v = dequant8((id - p.first_row) * p.row_bytes, u, part);
    let o = part_offsets(part) + vec2<u32>(u * 32u);
    let base = t * p.cols;
    for (var i = 0u; i < 4u; i++) {
        if (o.x + i < p.cols) {
            out[base + o.x + i] = v.a[i] * p.scale;
        }
        if (o.y + i < p.cols) {
            out[base + o.y + i] = v.b[i] * p.scale;
        }
    }
}
