// dx = dy · W through a frozen weight in its file layout (gpu/train_matmul.rs; quant.wgsl prepended, dequantising):
// dx[r, c] = Σ_o dy[r, o] · W[o, c], the transposed product, so each output column needs one column of W across all
// its rows. Nothing dequantised is kept: each invocation owns one part (8 values) of one 32-value unit of the columns
// and ACTS activation rows, and walks a slice of the weight's rows, dequantising that part of each.
//   grad_x: slices of the weight rows (of one chunk) run side by side and write their partial sums to
//           partial[slice, rows, cols] (a split product; with one slice in all, straight to dx);
//   reduce: dx = Σ_slice partial[slice] in slice order (fixed: the same bits every run).
// Where the partial sums would not fit one binding, each chunk is one slice writing dx itself, the first storing and
// the others (pad2 = 1) adding to it: their dispatches run one after another.
// quant.wgsl's Params, reused: rows = activation rows, cols = in, chunk_rows, first_row, out_stride = out (dy's
// columns), row_bytes, units; ids_offset = weight rows per slice, pad0 = this chunk's first slice, pad1 = this
// chunk's slices (reduce: all slices), pad2 = 1 to add to what partial holds.
// Invocation id = ((slice · tiles + tile) · units + unit) · 4 + part: neighbours read neighbouring bytes of a row.
// Bindings: w (chunk of the weight, bytes), dy [rows, out], partial [slices, rows, cols] (or dx), dx [rows, cols].

@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

const WG: u32 = 64u;
const ACTS: u32 = 8u;

fn store(i: u32, v: f32) {
    if (p.pad2 != 0u) {
        partial[i] += v;
    } else {
        partial[i] = v;
    }
}

@compute @workgroup_size(WG)
fn grad_x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    let tiles = (p.rows + ACTS - 1u) / ACTS;
    let per_slice = tiles * p.units * 4u;
    if (id >= p.pad1 * per_slice) {
        return;
    }
    let part = id % 4u;
    let u = (id / 4u) % p.units;
    let tile = (id / (4u * p.units)) % tiles;
    let slice = id / per_slice;
    let o0 = slice * p.ids_offset;
    let o1 = min(o0 + p.ids_offset, p.chunk_rows);
    // Rows past the activations repeat the last one: reads stay in bounds, results are dropped.
    var act: array<u32, ACTS>;
    for (var a = 0u; a < ACTS; a++) {
        act[a] = min(tile * ACTS + a, p.rows - 1u) * p.out_stride + p.first_row;
    }
    var acc_a: array<vec4<f32>, ACTS>;
    var acc_b: array<vec4<f32>, ACTS>;
    for (var o = o0; o < o1; o++) {
        let v = dequant8(o * p.row_bytes, u, part);
        for (var a = 0u; a < ACTS; a++) {
            let g = dy[act[a] + o];
            acc_a[a] += g * v.a;
            acc_b[a] += g * v.b;
        }
    }
    let at = part_offsets(part) + vec2<u32>(u * 32u);
    let base = (p.pad0 + slice) * p.rows * p.cols;
    for (var a = 0u; a < ACTS; a++) {
        let r = tile * ACTS + a;
        if (r >= p.rows) {
            break;
        }
        let row = base + r * p.cols;
        for (var c = 0u; c < 4u; c++) {
            if (at.x + c < p.cols) {
                store(row + at.x + c, acc_a[a][c]);
            }
            if (at.y + c < p.cols) {
                store(row + at.y + c, acc_b[a][c]);
            }
        }
    }
}

@compute @workgroup_size(WG)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let n = p.rows * p.cols;
    if (i >= n) {
        return;
    }
    var sum = 0.0;
    for (var s = 0u; s < p.pad1; s++) {
        sum += partial[s * n + i];
    }
    dx[i] = sum;
}
