// Matrix-matrix product for prefill: out[a, first_row + r] = Σ_i x[a, i] · W[r, i] for activation rows a and the
// weight rows r of one chunk, dequantised on the fly (quant.wgsl, prepended).
//
// One workgroup of 256 invocations computes a tile of TM = 64 weight rows × TN = 32 activation rows, so each weight
// block is read once per 32 activation rows. It steps through the row 32 values (one unit) at a time:
//   load:    invocation t dequantises part t % 4 of weight row t / 4 of the tile (8 values), and copies 4 activations
//            (row t / 8, values 4 (t % 8)..+3); both tiles go to workgroup memory k-major;
//   compute: invocation t accumulates weight rows 4 (t % 16)..+3 × activation rows 2 (t / 16)..+1 over the 32 values.
// Workgroups: (weight-row tiles, folded by grid(), × activation-row tiles in z).
// Bindings: w (chunk of the weight, bytes), x [rows, cols], out [rows, out_stride].

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 32u;

// ws[k * 16 + g] = weight rows 4g..4g+3 at value k of the unit; xs[k * 16 + h] = activation rows 2h, 2h + 1.
var<workgroup> ws: array<vec4<f32>, 512>;
var<workgroup> xs: array<vec2<f32>, 512>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let tile_r = (wid.x + wid.y * nwg.x) * TM;
    let tile_a = wid.z * TN;
    // Folding may add workgroups past the last tile; they still reach every barrier below.
    let live = tile_r < p.chunk_rows;

    // Loading roles. Rows past the chunk repeat its last row (in-bounds reads; their results are dropped).
    let lr = t / 4u;
    let lpart = t % 4u;
    let lrow = min(tile_r + lr, p.chunk_rows - 1u) * p.row_bytes;
    let lo = part_offsets(lpart);
    let xa = t / 8u;
    let xk = (t % 8u) * 4u;
    let xrow = tile_a + xa;

    // Computing roles.
    let g = t % 16u;
    let h = t / 16u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);

    for (var u = 0u; u < p.units; u++) {
        if (live) {
            let v = dequant8(lrow, u, lpart);
            for (var i = 0u; i < 4u; i++) {
                ws[(lo.x + i) * 16u + lr / 4u][lr % 4u] = v.a[i];
                ws[(lo.y + i) * 16u + lr / 4u][lr % 4u] = v.b[i];
            }
        }
        for (var i = 0u; i < 4u; i++) {
            let col = u * 32u + xk + i;
            var val = 0.0;
            if (xrow < p.rows && col < p.cols) {
                val = x[xrow * p.cols + col];
            }
            xs[(xk + i) * 16u + xa / 2u][xa % 2u] = val;
        }
        workgroupBarrier();
        for (var k = 0u; k < 32u; k++) {
            let wv = ws[k * 16u + g];
            let xv = xs[k * 16u + h];
            acc0 += wv * xv.x;
            acc1 += wv * xv.y;
        }
        workgroupBarrier();
    }

    if (!live) {
        return;
    }
    for (var i = 0u; i < 4u; i++) {
        let r = tile_r + 4u * g + i;
        if (r >= p.chunk_rows) {
            break;
        }
        let a0 = tile_a + 2u * h;
        if (a0 < p.rows) {
            out[a0 * p.out_stride + p.first_row + r] = acc0[i];
        }
        if (a0 + 1u < p.rows) {
            out[(a0 + 1u) * p.out_stride + p.first_row + r] = acc1[i];
        }
    }
}
