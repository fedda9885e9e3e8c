// Exact products (GpuOptions::exact) of the 32-value block types Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 by rounded
// activations, for decode and prefill alike: out[a, first_row + r] is, bit for bit, what the CPU backend's dot_q4_0
// ... dot_q8_0 (backend/cpu/dot.rs, ggml's AVX2 arithmetic) give for weight row r and activation row a.
// Prepended with exact.wgsl (fma_rn, hsum8, opaque) and quant.wgsl (Params, the weight binding, block_at,
// w32 / f16_at).
//
// ggml multiplies by Q8_0 / Q8_1 blocks (d16, q[32], and Q8_1's s = f16(d · Σq)); what reaches us is x' = q · d16
// (round_block.wgsl) and Q8_1's delta = s - d16 · Σq. Each block is rebuilt from them exactly:
//   d16 = f16(max |x'| / 127)  max |q| is 127 in every block that is not all zero, and 127 · d16 is exact, so the
//                              quotient is d16 up to the division's few ulps, which the rounding to f16 removes;
//   q = round(x' · (1 / d16))  within 127 · 2⁻²⁰ of the integer q; q = 0 where d16 = 0;
//   s = delta + d16 · Σq       d16 · Σq (11 + 12 bits) is exact and so is the sum (Sterbenz), fused or not.
// Per weight row and block, lane k (0..8) is the exact integer Σ of the products of values 4k..4k+3 (nibble types:
// the low nibbles of bytes 0..15 are values 0..15, the high nibbles values 16..31), and then, as ggml does:
//   acc[k] = fma(d_w · d16, f32(lane k), acc[k])              result hsum8(acc) (+ summs for Q4_1 / Q5_1)
//   Q4_1 / Q5_1 also: summs = summs + m_w · s                (a rounded product, then a rounded sum: not fused)
//   Q4_0 with REPACKED = 1: sacc = fma(f32(Σ lanes), d_w · d16, sacc)   result sacc
// Each invocation owns a tile of ROWS weight rows × ACTS activation rows: each activation block is rebuilt once
// per ROWS rows and each weight block unpacked once per ACTS rows. Like matvec_rows.wgsl it shares nothing (no
// workgroup memory, no barrier).
// Workgroups: (weight-row groups of WG · ROWS rows, folded by grid(), × activation-row tiles of ACTS in z).
// Bindings: w (chunk of the weight, bytes), x [rows, cols] (dense, cols a multiple of 32), out [rows, out_stride],
// sums [rows, units] (the Q8_1 delta; Q4_1 / Q5_1 only, otherwise bound but unread).
// Needs DTYPE (one of the five), REPACKED (1: a Q4_0 weight llama.cpp repacks, see matmul_exact.rs) and ACTS.

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> sums: array<f32>;

// One SIMD batch of lavapipe's 8-wide vectors per workgroup.
const WG: u32 = 8u;
const ROWS: u32 = 8u;

const LOW_NIBBLES: u32 = 0x0f0f0f0fu;

fn f16_round(v: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
}

// The 16 bytes starting at an even byte offset (w32 four times, in 4 or 5 loads instead of up to 8).
fn w128(off: u32) -> vec4<u32> {
    let i = off >> 2u;
    let a = vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]);
    if ((off & 2u) == 0u) {
        return a;
    }
    let next = vec4<u32>(a.yzw, w[i + 4u]);
    return (a >> vec4<u32>(16u)) | (next << vec4<u32>(16u));
}

// Bits 0..3 of h moved to bit 4 of bytes 0..3 (the fifth bits of four Q5 values).
fn fifth_bits(h: u32) -> u32 {
    return (((h & 15u) * 0x00204081u) & 0x01010101u) << 4u;
}

// One activation block rebuilt as ggml's Q8 block: q packed four to a word (word j = values 4j..4j+3), the sum of
// each word's four q, d16, and Q8_1's s.
struct Act {
    q: array<u32, 8>,
    qsum: array<i32, 8>,
    d: f32,
    s: f32,
}

fn act_block(a: u32, u: u32) -> Act {
    var v: array<vec4<f32>, 8>;
    var amax = 0.0;
    let base = (a * p.cols + u * 32u) / 4u;
    for (var j = 0u; j < 8u; j++) {
        v[j] = x[base + j];
        let m = abs(v[j]);
        amax = max(amax, max(max(m.x, m.y), max(m.z, m.w)));
    }
    var b: Act;
    b.d = f16_round(amax / 127.0);
    let inv = select(0.0, 1.0 / b.d, b.d != 0.0);
    var total = 0;
    for (var j = 0u; j < 8u; j++) {
        let q = vec4<i32>(round(v[j] * inv));
        b.q[j] = pack4xI8(q);
        b.qsum[j] = q.x + q.y + q.z + q.w;
        total += b.qsum[j];
    }
    b.s = 0.0;
    if (DTYPE == Q4_1 || DTYPE == Q5_1) {
        b.s = sums[a * p.units + u] + b.d * f32(total);
    }
    return b;
}

// A weight block's values as packed i8, word j = values 4j..4j+3 (nibble types: the low nibbles of qs word j for
// j < 4, the high nibbles of qs word j - 4 after), without Q4_0's / Q5_0's offset (OFFSET), and its d (and m).
struct Weight {
    v: array<u32, 8>,
    d: f32,
    m: f32,
}

// Q4_0 and Q5_0 values are stored plus OFFSET; lanes subtract it as OFFSET · Σq, which keeps the integer sums.
const OFFSET: i32 = select(select(0, 16, DTYPE == Q5_0), 8, DTYPE == Q4_0);

fn weight_block(blk: u32) -> Weight {
    var b: Weight;
    b.d = f16_at(blk);
    b.m = 0.0;
    if (DTYPE == Q8_0) {
        let lo = w128(blk + 2u);
        let hi = w128(blk + 18u);
        for (var j = 0u; j < 4u; j++) {
            b.v[j] = lo[j];
            b.v[j + 4u] = hi[j];
        }
        return b;
    }
    var qs_at = blk + 2u; // Q4_0
    var qh = 0u;
    switch DTYPE {
        case Q4_1: {
            b.m = f16_at(blk + 2u);
            qs_at = blk + 4u;
        }
        case Q5_0: {
            qh = w32(blk + 2u);
            qs_at = blk + 6u;
        }
        case Q5_1: {
            b.m = f16_at(blk + 2u);
            qh = w32(blk + 4u);
            qs_at = blk + 8u;
        }
        default: {}
    }
    let qs = w128(qs_at);
    for (var j = 0u; j < 4u; j++) {
        b.v[j] = (qs[j] & LOW_NIBBLES) | fifth_bits(qh >> (4u * j));
        b.v[j + 4u] = ((qs[j] >> 4u) & LOW_NIBBLES) | fifth_bits(qh >> (16u + 4u * j));
    }
    return b;
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
    var acc: array<array<array<f32, 8>, ACTS>, ROWS>;
    // Q4_1 / Q5_1: summs; repacked Q4_0: sacc.
    var sacc: array<array<f32, ACTS>, ROWS>;
    var act: array<Act, ACTS>;
    for (var u = 0u; u < p.units; u++) {
        for (var t = 0u; t < ACTS; t++) {
            act[t] = act_block(min(a0 + t, p.rows - 1u), u);
        }
        for (var r = 0u; r < ROWS; r++) {
            let wb = weight_block(block_at(row[r], u));
            for (var t = 0u; t < ACTS; t++) {
                var l: array<i32, 8>;
                for (var j = 0u; j < 8u; j++) {
                    l[j] = dot4I8Packed(wb.v[j], act[t].q[j]) - OFFSET * act[t].qsum[j];
                }
                let d = wb.d * act[t].d;
                if (DTYPE == Q4_1 || DTYPE == Q5_1) {
                    // opaque: a compiler must not fuse this multiply-add (ggml rounds the product).
                    sacc[r][t] = sacc[r][t] + opaque(wb.m * act[t].s);
                }
                if (DTYPE == Q4_0 && REPACKED == 1u) {
                    let total = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
                    sacc[r][t] = fma_rn(f32(total), d, sacc[r][t]);
                } else {
                    for (var k = 0u; k < 8u; k++) {
                        acc[r][t][k] = fma_rn(d, f32(l[k]), acc[r][t][k]);
                    }
                }
            }
        }
    }
    for (var t = 0u; t < ACTS; t++) {
        if (a0 + t >= p.rows) {
            break;
        }
        for (var r = 0u; r < ROWS; r++) {
            if (r0 + r < p.chunk_rows) {
                let s = acc[r][t];
                var v = hsum8(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
                if (DTYPE == Q4_1 || DTYPE == Q5_1) {
                    v = v + sacc[r][t];
                } else if (DTYPE == Q4_0 && REPACKED == 1u) {
                    v = sacc[r][t];
                }
                out[(a0 + t) * p.out_stride + p.first_row + r0 + r] = v;
            }
        }
    }
}
