// Matrix-vector product for decode on adapters that run shaders on the CPU (lavapipe, SwiftShader): the same
// out[first_row + r] = Σ_i x[i] · W[r, i] as matvec.wgsl, dequantised on the fly (quant.wgsl, prepended).
//
// There a storage or workgroup load costs a per-lane loop in the driver, so the time goes by loads, not bytes, and
// matvec.wgsl's shape (activations reloaded for every 4 rows, partial sums through workgroup memory, barriers) is
// slow. Here each invocation owns ROWS whole rows: every weight word is loaded once (a unit's scales once for its
// 4 parts), every activation once per ROWS rows, and nothing is shared, so there is no workgroup memory and no barrier. On a real GPU this would read
// memory uncoalesced; the launcher picks it only for CPU-emulated adapters.
// Bindings: w (chunk of the weight, bytes), x [cols], out [out_stride], sums [units] (SUMS = 1 only).

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// With SUMS = 1 (Q4_1 / Q5_1 times Q8_1-rounded activations): the per-block sum term, [units]. Otherwise unused.
@group(0) @binding(4) var<storage, read> sums: array<f32>;

// One SIMD batch of lavapipe's 8-wide vectors per workgroup.
const WG: u32 = 8u;
const ROWS: u32 = 16u;

// x[i], or 0 past the row (a float weight's last unit may be short, and 0 · garbage must not become NaN).
fn xv(i: u32) -> f32 {
    return select(0.0, x[min(i, p.cols - 1u)], i < p.cols);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r0 = ((wid.x + wid.y * nwg.x) * WG + lid) * ROWS;
    if (r0 >= p.chunk_rows) {
        return;
    }
    // Rows past the chunk repeat its last row: the reads stay in bounds and the sums are dropped.
    var row: array<u32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        row[r] = min(r0 + r, p.chunk_rows - 1u) * p.row_bytes;
    }
    var acc: array<f32, ROWS>;
    var head: array<Head, ROWS>;
    for (var u = 0u; u < p.units; u++) {
        // Each row's scales once per unit, not once per part.
        for (var r = 0u; r < ROWS; r++) {
            head[r] = unit_head(row[r], u);
        }
        for (var part = 0u; part < 4u; part++) {
            let o = part_offsets(part) + vec2<u32>(u * 32u);
            let xa = vec4<f32>(xv(o.x), xv(o.x + 1u), xv(o.x + 2u), xv(o.x + 3u));
            let xb = vec4<f32>(xv(o.y), xv(o.y + 1u), xv(o.y + 2u), xv(o.y + 3u));
            for (var r = 0u; r < ROWS; r++) {
                let v = dequant_part(row[r], u, part, head[r]);
                acc[r] += dot(v.a, xa) + dot(v.b, xb);
            }
        }
        if (SUMS == 1u) {
            let s = sums[u];
            for (var r = 0u; r < ROWS; r++) {
                acc[r] += head_min(head[r]) * s;
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        if (r0 + r < p.chunk_rows) {
            out[p.first_row + r0 + r] = acc[r];
        }
    }
}
