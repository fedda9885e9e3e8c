// Matrix-matrix product for prefill on adapters that run shaders on the CPU (lavapipe, SwiftShader): the same
// out[a, first_row + r] = Σ_i x[a, i] · W[r, i] as matmat.wgsl, dequantised on the fly (quant.wgsl, prepended).
//
// As in matvec_rows.wgsl, loads are what costs there (workgroup memory as much as storage), so instead of
// matmat.wgsl's shared tiles each invocation owns a register tile of ROWS weight rows × ACTS activation rows: per
// 8 values it loads 8 activations of each of its ACTS rows and dequantises each of its ROWS rows once, for
// ROWS · ACTS · 8 multiply-adds. No workgroup memory, no barriers.
// Workgroups: (weight-row groups of WG · ROWS rows, folded by grid(), × activation-row tiles of ACTS in z).
// Bindings: w (chunk of the weight, bytes), x [rows, cols], out [rows, out_stride], sums [rows, units] (SUMS = 1).

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// With SUMS = 1 (Q4_1 / Q5_1 times Q8_1-rounded activations): the per-block sum term. Otherwise unused.
@group(0) @binding(4) var<storage, read> sums: array<f32>;

const WG: u32 = 8u;
const ROWS: u32 = 16u;
const ACTS: u32 = 8u;

// x[a, i], or 0 past the row's end (a float weight's last unit may be short).
fn xv(a: u32, i: u32) -> f32 {
    return select(0.0, x[a * p.cols + min(i, p.cols - 1u)], i < p.cols);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r0 = ((wid.x + wid.y * nwg.x) * WG + lid) * ROWS;
    let a0 = wid.z * ACTS;
    if (r0 >= p.chunk_rows) {
        return;
    }
    // Rows past the chunk or the activations repeat the last one: reads stay in bounds, results are dropped.
    var row: array<u32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        row[r] = min(r0 + r, p.chunk_rows - 1u) * p.row_bytes;
    }
    var act: array<u32, ACTS>;
    for (var a = 0u; a < ACTS; a++) {
        act[a] = min(a0 + a, p.rows - 1u);
    }
    var acc: array<f32, ROWS * ACTS>;
    var xa: array<vec4<f32>, ACTS>;
    var xb: array<vec4<f32>, ACTS>;
    var head: array<Head, ROWS>;
    for (var u = 0u; u < p.units; u++) {
        // Each row's scales once per unit, not once per part.
        for (var r = 0u; r < ROWS; r++) {
            head[r] = unit_head(row[r], u);
        }
        for (var part = 0u; part < 4u; part++) {
            let o = part_offsets(part) + vec2<u32>(u * 32u);
            for (var a = 0u; a < ACTS; a++) {
                let s = act[a];
                xa[a] = vec4<f32>(xv(s, o.x), xv(s, o.x + 1u), xv(s, o.x + 2u), xv(s, o.x + 3u));
                xb[a] = vec4<f32>(xv(s, o.y), xv(s, o.y + 1u), xv(s, o.y + 2u), xv(s, o.y + 3u));
            }
            for (var r = 0u; r < ROWS; r++) {
                let v = dequant_part(row[r], u, part, head[r]);
                for (var a = 0u; a < ACTS; a++) {
                    acc[r * ACTS + a] += dot(v.a, xa[a]) + dot(v.b, xb[a]);
                }
            }
        }
        if (SUMS == 1u) {
            var su: array<f32, ACTS>;
            for (var a = 0u; a < ACTS; a++) {
                su[a] = sums[act[a] * p.units + u];
            }
            for (var r = 0u; r < ROWS; r++) {
                let m = head_min(head[r]);
                for (var a = 0u; a < ACTS; a++) {
                    acc[r * ACTS + a] += m * su[a];
                }
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        for (var a = 0u; a < ACTS; a++) {
            if (r0 + r < p.chunk_rows && a0 + a < p.rows) {
                out[(a0 + a) * p.out_stride + p.first_row + r0 + r] = acc[r * ACTS + a];
            }
        }
    }
}
