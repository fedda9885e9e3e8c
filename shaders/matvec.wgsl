// Matrix-vector product for decode (one activation row): out[first_row + r] = Σ_i x[i] · W[r, i] over the weight
// rows r of one chunk, dequantised on the fly (quant.wgsl, prepended). Memory-bound: every weight byte is read once.
//
// One workgroup of WG invocations computes ROWS consecutive weight rows. A row is cut into items of 8 values (one
// part of a 32-value unit, item = 4 · unit + part); invocation `lid` takes items lid, lid + WG, ..., so neighbours
// read neighbouring bytes. Each item's 8 activations are loaded once and dotted with all ROWS rows; the per-row
// partial sums are then added up by a tree in workgroup memory.
// Bindings: w (chunk of the weight, bytes), x [cols], out [out_stride], sums [units] (SUMS = 1 only).

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// With SUMS = 1 (Q4_1 / Q5_1 times Q8_1-rounded activations): the per-block sum term, [units]. Otherwise unused.
@group(0) @binding(4) var<storage, read> sums: array<f32>;

const WG: u32 = 64u;
const ROWS: u32 = 4u;

var<workgroup> partial: array<f32, ROWS * WG>;

// x[i], or 0 past the row (a float weight's last unit may be short, and 0 · garbage must not become NaN).
fn xv(i: u32) -> f32 {
    return select(0.0, x[i], i < p.cols);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r0 = (wid.x + wid.y * nwg.x) * ROWS;
    if (r0 >= p.chunk_rows) {
        return;
    }
    // Rows past the chunk repeat its last row: the reads stay in bounds and the sums are dropped.
    var row: array<u32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        row[r] = min(r0 + r, p.chunk_rows - 1u) * p.row_bytes;
    }
    var acc: array<f32, ROWS>;
    let items = p.units * 4u;
    for (var it = lid; it < items; it += WG) {
        let u = it >> 2u;
        let part = it & 3u;
        let o = part_offsets(part) + vec2<u32>(u * 32u);
        let xa = vec4<f32>(xv(o.x), xv(o.x + 1u), xv(o.x + 2u), xv(o.x + 3u));
        let xb = vec4<f32>(xv(o.y), xv(o.y + 1u), xv(o.y + 2u), xv(o.y + 3u));
        for (var r = 0u; r < ROWS; r++) {
            let v = dequant8(row[r], u, part);
            acc[r] += dot(v.a, xa) + dot(v.b, xb);
        }
        if (SUMS == 1u && part == 0u) {
            let s = sums[u];
            for (var r = 0u; r < ROWS; r++) {
                acc[r] += block_min(row[r], u) * s;
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        partial[r * WG + lid] = acc[r];
    }
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            for (var r = 0u; r < ROWS; r++) {
                partial[r * WG + lid] += partial[r * WG + lid + stride];
            }
        }
        workgroupBarrier();
    }
    if (lid < ROWS && r0 + lid < p.chunk_rows) {
        out[p.first_row + r0 + lid] = partial[lid * WG];
    }
}
