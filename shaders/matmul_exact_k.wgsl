// Exact products (GpuOptions::exact) of the K-quant weight types Q4_K, Q5_K and Q6_K by rounded activations:
// out[a, first_row + r] is, bit for bit, what the CPU backend's dot_q4_k / dot_q5_k / dot_q6_k (backend/cpu/dot.rs,
// ggml's AVX2 arithmetic) give for weight row r and activation row a, on the kernel path the CPU picks (PATH).
// Prepended with exact.wgsl (fma_rn, hsum8, opaque) and quant.wgsl (Params, the weight binding, w32 / f16_at).
//
// ggml multiplies by Q8_K blocks of 256 (d, q[256], bsums[16] = Σ q over each 16 values). What reaches us is
// x' = q · d (round_block.wgsl mode 2) and d itself per block (its round_delta, kept on the exact path):
//   q = round(x' / d)   x' is q · d rounded once, so x' / d is within 127 · 2⁻²³ of the integer q; q = 0 where d = 0;
//   bsums               summed from q.
// Per weight row and block, the integer lanes are dot.rs's (k4_lanes: four 64-value chunks of eight lanes, lane k
// the bytes 4k..4k+3 of each 32-byte run; q6k_lanes: eight lanes, less the +32 offset through bsums), and the
// float formula is dot.rs's k4_combine / q6k_combine for PATH:
//   0 Vec     acc[k] = fma(y.d · d_w, lane k, acc[k]), and the min term per lane (Q4_K) or per block (Q5_K)
//   1 Tiled   acc = fma(fma(-dmin_w, Σmin, d_w · Σlanes), y.d, acc)              (Q6_K: fma(d_w · Σ, y.d, acc))
//   2 Repacked (Q4_K with rows % 8 == 0): acc = fma(Σ, d_w · y.d, acc), accm = fma(Σmin, dmin_w · y.d, accm),
//             result acc - accm; activation rows below p.pad1 take the gemm flavour, the two fmas per chunk.
// Every product that ggml rounds before adding is kept from fusing with opaque().
// Each invocation owns ROWS weight rows × ACTS activation rows (as matmul_exact.wgsl); nothing is shared.
// Workgroups: (weight-row groups of WG · ROWS rows, folded by grid(), × activation-row tiles of ACTS in z).
// Bindings: w (chunk of the weight, bytes), x [rows, cols] (rounded, cols a multiple of 256), out [rows,
// out_stride], dk [rows, cols / 256] (Q8_K's d).
// Needs DTYPE (Q4_K, Q5_K or Q6_K), PATH and ACTS.

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> dk: array<f32>;

const WG: u32 = 8u;
const ROWS: u32 = 4u;

const LOW_NIBBLES: u32 = 0x0f0f0f0fu;
const BLOCK_BYTES: u32 = select(select(210u, 176u, DTYPE == Q5_K), 144u, DTYPE == Q4_K);

// The 16 bytes starting at an even byte offset.
fn w128(off: u32) -> vec4<u32> {
    let i = off >> 2u;
    let a = vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]);
    if ((off & 2u) == 0u) {
        return a;
    }
    let next = vec4<u32>(a.yzw, w[i + 4u]);
    return (a >> vec4<u32>(16u)) | (next << vec4<u32>(16u));
}

// One Q8_K block rebuilt: q packed four to a word (word j = values 4j..4j+3), bsums, d.
struct Act {
    q: array<u32, 64>,
    bs: array<i32, 16>,
    d: f32,
}

fn act_block(a: u32, blk: u32) -> Act {
    var b: Act;
    b.d = dk[a * (p.units / 8u) + blk];
    let base = (a * p.cols + blk * 256u) / 4u;
    for (var j = 0u; j < 16u; j++) {
        var s = 0;
        for (var i = 0u; i < 4u; i++) {
            let v = x[base + 4u * j + i];
            let q = select(vec4<i32>(0), vec4<i32>(round(v / b.d)), b.d != 0.0);
            b.q[4u * j + i] = pack4xI8(q);
            s += (q.x + q.y) + (q.z + q.w);
        }
        b.bs[j] = s;
    }
    return b;
}

// A weight block: its values packed as i8, word j pairing with the Q8_K block's word j (K4: chunk c's low nibbles
// of lane k at 16c + k, its high nibbles at 16c + 8 + k, Q5_K's fifth bits merged; Q6_K: 6-bit values, the +32
// offset left in), its scales (6-bit, or Q6_K's 16 signed ones), mins, d and dmin.
struct Weight {
    v: array<u32, 64>,
    sc: array<i32, 16>,
    mn: array<i32, 8>,
    d: f32,
    dmin: f32,
}

fn byte_of(word: u32, i: u32) -> u32 {
    return (word >> (8u * i)) & 0xffu;
}

fn weight_block(blk: u32) -> Weight {
    var b: Weight;
    if (DTYPE == Q6_K) {
        b.d = f16_at(blk + 208u);
        b.dmin = 0.0;
        for (var i = 0u; i < 4u; i++) {
            let s = w32(blk + 192u + 4u * i);
            for (var j = 0u; j < 4u; j++) {
                // Signed bytes.
                b.sc[4u * i + j] = (bitcast<i32>(s << (24u - 8u * j))) >> 24u;
            }
        }
        for (var n = 0u; n < 2u; n++) {
            for (var h = 0u; h < 2u; h++) {
                let qa = w128(blk + 64u * n + 16u * h);
                let qb = w128(blk + 64u * n + 32u + 16u * h);
                let qh = w128(blk + 128u + 32u * n + 16u * h);
                for (var i = 0u; i < 4u; i++) {
                    let k = 4u * h + i;
                    let hw = qh[i];
                    b.v[32u * n + k] = (qa[i] & LOW_NIBBLES) | ((hw & 0x03030303u) << 4u);
                    b.v[32u * n + 8u + k] = (qb[i] & LOW_NIBBLES) | (((hw >> 2u) & 0x03030303u) << 4u);
                    b.v[32u * n + 16u + k] = ((qa[i] >> 4u) & LOW_NIBBLES) | (((hw >> 4u) & 0x03030303u) << 4u);
                    b.v[32u * n + 24u + k] = ((qb[i] >> 4u) & LOW_NIBBLES) | (((hw >> 6u) & 0x03030303u) << 4u);
                }
            }
        }
        return b;
    }
    b.d = f16_at(blk);
    b.dmin = f16_at(blk + 2u);
    // k_scales_mins (dot.rs) over the 12 scale bytes s0 | s1 | s2.
    let s0 = w32(blk + 4u);
    let s1 = w32(blk + 8u);
    let s2 = w32(blk + 12u);
    for (var j = 0u; j < 4u; j++) {
        b.sc[j] = i32(byte_of(s0, j) & 63u);
        b.mn[j] = i32(byte_of(s1, j) & 63u);
        b.sc[j + 4u] = i32((byte_of(s2, j) & 15u) | ((byte_of(s0, j) >> 6u) << 4u));
        b.mn[j + 4u] = i32((byte_of(s2, j) >> 4u) | ((byte_of(s1, j) >> 6u) << 4u));
    }
    let qs_at = select(blk + 16u, blk + 48u, DTYPE == Q5_K);
    for (var c = 0u; c < 4u; c++) {
        for (var h = 0u; h < 2u; h++) {
            let qs = w128(qs_at + 32u * c + 16u * h);
            var qh = vec4<u32>(0u);
            if (DTYPE == Q5_K) {
                qh = w128(blk + 16u + 16u * h);
            }
            for (var i = 0u; i < 4u; i++) {
                let k = 4u * h + i;
                // Value l = 4k + byte of chunk c: low nibble (value 64c + l), high nibble (value 64c + 32 + l), and
                // Q5_K's fifth bits, bits 2c and 2c + 1 of qh[l].
                let lo = qs[i] & LOW_NIBBLES;
                let hi = (qs[i] >> 4u) & LOW_NIBBLES;
                b.v[16u * c + k] = lo | (((qh[i] >> (2u * c)) & 0x01010101u) << 4u);
                b.v[16u * c + 8u + k] = hi | (((qh[i] >> (2u * c + 1u)) & 0x01010101u) << 4u);
            }
        }
    }
    return b;
}

// The four lanes of ggml's min term (k_min_lanes in dot.rs); their sum is k_min_sum.
fn min_lanes(wb: Weight, y: Act) -> vec4<i32> {
    var m: vec4<i32>;
    for (var t = 0u; t < 4u; t++) {
        m[t] = wb.mn[2u * t] * (y.bs[4u * t] + y.bs[4u * t + 1u])
            + wb.mn[2u * t + 1u] * (y.bs[4u * t + 2u] + y.bs[4u * t + 3u]);
    }
    return m;
}

// Per (weight row, activation row): the lanes' accumulators and the scalar ones.
struct Acc {
    l: array<f32, 8>,
    m: vec4<f32>,
    s: f32,
    sm: f32,
}

// acc0 after one more block (dot.rs's loop body).
fn accumulate(acc0: Acc, wb: Weight, y: Act, gemm: bool) -> Acc {
    var acc = acc0;
    // Lanes: K4 chunk c lane k in lanes[c][k]; Q6_K in lanes[0][k].
    var lanes: array<array<i32, 8>, 4>;
    if (DTYPE == Q6_K) {
        for (var k = 0u; k < 8u; k++) {
            var s = 0;
            for (var n = 0u; n < 2u; n++) {
                for (var r = 0u; r < 4u; r++) {
                    s += wb.sc[8u * n + 2u * r + k / 4u]
                        * dot4I8Packed(wb.v[32u * n + 8u * r + k], y.q[32u * n + 8u * r + k]);
                }
            }
            let off = y.bs[2u * k] * wb.sc[2u * k] + y.bs[2u * k + 1u] * wb.sc[2u * k + 1u];
            lanes[0][k] = s - off * 32;
        }
    } else {
        for (var c = 0u; c < 4u; c++) {
            for (var k = 0u; k < 8u; k++) {
                lanes[c][k] = wb.sc[2u * c] * dot4I8Packed(wb.v[16u * c + k], y.q[16u * c + k])
                    + wb.sc[2u * c + 1u] * dot4I8Packed(wb.v[16u * c + 8u + k], y.q[16u * c + 8u + k]);
            }
        }
    }
    var l: array<i32, 8>;
    var total = 0;
    for (var k = 0u; k < 8u; k++) {
        l[k] = ((lanes[0][k] + lanes[1][k]) + (lanes[2][k] + lanes[3][k]));
        total += l[k];
    }
    if (DTYPE == Q6_K) {
        if (PATH == 0u) {
            let d = opaque(y.d * wb.d);
            for (var k = 0u; k < 8u; k++) {
                acc.l[k] = fma_rn(d, f32(l[k]), acc.l[k]);
            }
        } else {
            acc.s = fma_rn(opaque(wb.d * f32(total)), y.d, acc.s);
        }
        return acc;
    }
    let ml = min_lanes(wb, y);
    let min_sum = (ml.x + ml.y) + (ml.z + ml.w);
    if (PATH == 0u) {
        let d = opaque(y.d * wb.d);
        let dmin = opaque(-y.d * wb.dmin);
        for (var k = 0u; k < 8u; k++) {
            acc.l[k] = fma_rn(d, f32(l[k]), acc.l[k]);
        }
        if (DTYPE == Q5_K) {
            acc.sm = fma_rn(dmin, f32(min_sum), acc.sm);
        } else {
            for (var t = 0u; t < 4u; t++) {
                acc.m[t] = fma_rn(dmin, f32(ml[t]), acc.m[t]);
            }
        }
    } else if (PATH == 1u) {
        let res = fma_rn(-wb.dmin, f32(min_sum), opaque(wb.d * f32(total)));
        acc.s = fma_rn(res, y.d, acc.s);
    } else {
        let da = opaque(wb.d * y.d);
        let dmina = opaque(wb.dmin * y.d);
        if (gemm) {
            for (var c = 0u; c < 4u; c++) {
                var chunk = 0;
                for (var k = 0u; k < 8u; k++) {
                    chunk += lanes[c][k];
                }
                acc.s = fma_rn(f32(chunk), da, acc.s);
                acc.sm = fma_rn(f32(ml[c]), dmina, acc.sm);
            }
        } else {
            acc.s = fma_rn(f32(total), da, acc.s);
            acc.sm = fma_rn(f32(min_sum), dmina, acc.sm);
        }
    }
    return acc;
}

fn result(acc: Acc) -> f32 {
    let s = acc.l;
    let lanes = hsum8(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
    if (PATH == 0u) {
        if (DTYPE == Q4_K) {
            return lanes + ((acc.m.x + acc.m.z) + (acc.m.y + acc.m.w));
        }
        if (DTYPE == Q5_K) {
            return lanes + acc.sm;
        }
        return lanes;
    }
    if (PATH == 1u) {
        return acc.s;
    }
    return acc.s - acc.sm;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // Params.pad0 is 0 (matmul.rs), which the compiler cannot know (exact.wgsl).
    exact_init(p.pad0);
    let r0 = ((wid.x + wid.y * nwg.x) * WG + lid) * ROWS;
    let a0 = wid.z * ACTS;
    if (r0 >= p.chunk_rows) {
        return;
    }
    // Rows past the chunk or the activations repeat the last one: the reads stay in bounds, the results are dropped.
    var row: array<u32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        row[r] = min(r0 + r, p.chunk_rows - 1u) * p.row_bytes;
    }
    var acc: array<array<Acc, ACTS>, ROWS>;
    var act: array<Act, ACTS>;
    for (var blk = 0u; blk < p.units / 8u; blk++) {
        for (var t = 0u; t < ACTS; t++) {
            act[t] = act_block(min(a0 + t, p.rows - 1u), blk);
        }
        for (var r = 0u; r < ROWS; r++) {
            let wb = weight_block(row[r] + blk * BLOCK_BYTES);
            for (var t = 0u; t < ACTS; t++) {
                acc[r][t] = accumulate(acc[r][t], wb, act[t], a0 + t < p.pad1);
            }
        }
    }
    for (var t = 0u; t < ACTS; t++) {
        if (a0 + t >= p.rows) {
            break;
        }
        for (var r = 0u; r < ROWS; r++) {
            if (r0 + r < p.chunk_rows) {
                out[(a0 + t) * p.out_stride + p.first_row + r0 + r] = result(acc[r][t]);
            }
        }
    }
}
