// Shared by matvec.wgsl, matmat.wgsl and embed.wgsl (prepended to each): the uniforms, the weight binding, and
// dequantisation of GGUF weights read in their file layout.
//
// A weight row is split into units of 32 values (one block of the 32-value types, one sub-block of the K-quants,
// 32 consecutive values of F32/F16/BF16 where the last unit may be short) and each unit into 4 parts of 8 values.
// dequant8(row, u, part) returns the 8 values of one part as two vec4s, `a` and `b`, that sit at
// part_offsets(part).x and .y within the unit. Values past `cols` (float types only) come back as 0.
//
// The weight is bound as array<u32>: rows are row_bytes long and row_bytes is only 2-byte aligned for Q4_0 (18 B
// blocks), Q5_0 (22), Q8_0 (34) and Q6_K (210), so a block may start in the middle of a word. Every field we read
// sits at an even offset within its block, which w32 / w16 / w8 rely on.
//
// Needs DTYPE (a ggml type id, below) defined by the launcher.

const F32: u32 = 0u;
const F16: u32 = 1u;
const Q4_0: u32 = 2u;
const Q4_1: u32 = 3u;
const Q5_0: u32 = 6u;
const Q5_1: u32 = 7u;
const Q8_0: u32 = 8u;
const Q4_K: u32 = 12u;
const Q5_K: u32 = 13u;
const Q6_K: u32 = 14u;
const BF16: u32 = 30u;

// Mirrors `Params` in engine/src/backend/gpu/matmul.rs.
struct Params {
    rows: u32,        // activation rows (matmul) or token ids (embed)
    cols: u32,        // values per weight row
    chunk_rows: u32,  // weight rows in this chunk's buffer
    first_row: u32,   // the weight row the buffer starts at = first output column written
    out_stride: u32,  // output columns (all weight rows)
    row_bytes: u32,   // bytes of one weight row
    units: u32,       // 32-value units per row: ceil(cols / 32)
    ids_offset: u32,  // embed: word offset of the token ids in their buffer
    scale: f32,       // embed: multiplier of the gathered rows
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;

struct Part {
    a: vec4<f32>,
    b: vec4<f32>,
}

// The 32 bits starting at an even byte offset.
fn w32(off: u32) -> u32 {
    let i = off >> 2u;
    if ((off & 2u) == 0u) {
        return w[i];
    }
    return (w[i] >> 16u) | (w[i + 1u] << 16u);
}

// The 16 bits at an even byte offset.
fn w16(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 2u) * 8u)) & 0xffffu;
}

fn w8(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 3u) * 8u)) & 0xffu;
}

fn f16_at(off: u32) -> f32 {
    return unpack2x16float(w16(off)).x;
}

const BYTE_SHIFTS = vec4<u32>(0u, 8u, 16u, 24u);

// (q >> shift[c]) & mask for each component c; with shift = BYTE_SHIFTS + s, bits s.. of each byte of q.
fn bits4(q: u32, shift: vec4<u32>, mask: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> shift) & vec4<u32>(mask);
}

// Low and high nibbles of the four bytes of q.
fn lo4(q: u32) -> vec4<u32> {
    return bits4(q, BYTE_SHIFTS, 15u);
}

fn hi4(q: u32) -> vec4<u32> {
    return bits4(q, BYTE_SHIFTS + vec4<u32>(4u), 15u);
}

// The four bytes of q as signed values.
fn i8x4(q: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(q) << (vec4<u32>(24u) - BYTE_SHIFTS)) >> vec4<u32>(24u));
}

// Where a part's `a` and `b` sit within its unit. The 32-value nibble types keep value j in the low nibble of byte j
// and value j + 16 in its high nibble, so one 4-byte read yields values 4p..4p+3 and 16+4p..16+4p+3.
fn part_offsets(part: u32) -> vec2<u32> {
    if (DTYPE == Q4_0 || DTYPE == Q4_1 || DTYPE == Q5_0 || DTYPE == Q5_1) {
        return vec2<u32>(4u * part, 16u + 4u * part);
    }
    return vec2<u32>(8u * part, 8u * part + 4u);
}

// A unit's scales, loaded once per unit and shared by its 4 parts (loads are what costs on CPU-emulated adapters):
// f holds the type's per-unit scales (see unit_head), q the Q5_0 / Q5_1 high bits.
struct Head {
    f: vec2<f32>,
    q: u32,
}

// The 64 bits at an even byte offset. One word more is read when off is not 4-aligned.
fn w64(off: u32) -> vec2<u32> {
    let i = off >> 2u;
    if ((off & 2u) == 0u) {
        return vec2<u32>(w[i], w[i + 1u]);
    }
    let b = w[i + 1u];
    return vec2<u32>((w[i] >> 16u) | (b << 16u), (b >> 16u) | (w[i + 2u] << 16u));
}

// The byte offset of unit u's block in the row starting at `row`.
fn block_at(row: u32, u: u32) -> u32 {
    switch DTYPE {
        case Q4_0: { return row + u * 18u; }
        case Q4_1: { return row + u * 20u; }
        case Q5_0: { return row + u * 22u; }
        case Q5_1: { return row + u * 24u; }
        case Q8_0: { return row + u * 34u; }
        case Q4_K: { return row + (u >> 3u) * 144u; }
        case Q5_K: { return row + (u >> 3u) * 176u; }
        case Q6_K: { return row + (u >> 3u) * 210u; }
        default: { return row; }
    }
}

// The 6-bit scale and min of K-quant sub-block j (0..8) from the 12 scale bytes at s (ggml's get_scale_min_k4):
// j < 4 keeps them in the low 6 bits of bytes j and j + 4; j >= 4 splits them into a nibble of byte j + 4 and the
// top 2 bits of bytes j - 4 (scale) and j (min).
fn scale_min_k4(s: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(w8(s + j) & 63u), f32(w8(s + j + 4u) & 63u));
    }
    let e = w8(s + j + 4u);
    let sc = (e & 15u) | ((w8(s + j - 4u) >> 6u) << 4u);
    let m = (e >> 4u) | ((w8(s + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

// The i8 at an even or odd byte offset.
fn i8_at(off: u32) -> f32 {
    return f32(bitcast<i32>(w8(off) << 24u) >> 24u);
}

// Unit u's scales: Q4_0 / Q5_0 / Q8_0: f.x = d. Q4_1 / Q5_1: f = (d, m), q = qh. Q4_K / Q5_K: f = (d · scale,
// dmin · min) of sub-block u % 8. Q6_K: f = d · scale for parts 0-1 and for parts 2-3. Floats: unused.
fn unit_head(row: u32, u: u32) -> Head {
    let blk = block_at(row, u);
    switch DTYPE {
        case Q4_0, Q8_0: { return Head(vec2<f32>(f16_at(blk), 0.0), 0u); }
        case Q4_1: { return Head(unpack2x16float(w32(blk)), 0u); }
        case Q5_0: { return Head(vec2<f32>(f16_at(blk), 0.0), w32(blk + 2u)); }
        case Q5_1: { return Head(unpack2x16float(w32(blk)), w32(blk + 4u)); }
        case Q4_K, Q5_K: {
            let dm = unpack2x16float(w32(blk));
            return Head(dm * scale_min_k4(blk + 4u, u & 7u), 0u);
        }
        case Q6_K: {
            let j = u & 7u;
            let sc = blk + 192u + 8u * (j >> 2u) + 2u * (j & 3u);
            return Head(f16_at(blk + 208u) * vec2<f32>(i8_at(sc), i8_at(sc + 1u)), 0u);
        }
        default: { return Head(vec2<f32>(0.0), 0u); }
    }
}

// The min m of unit u of a Q4_1 / Q5_1 row; 0 for other types. ggml's Q8_1 product adds m · f16(d · Σq) per block
// where the rounded activations give m · f16(d) · Σq: the products add the difference, m · sums[u]
// (round_activations.wgsl, entry q8_1, writes sums).
fn head_min(h: Head) -> f32 {
    if (DTYPE == Q4_1 || DTYPE == Q5_1) {
        return h.f.y;
    }
    return 0.0;
}

fn block_min(row: u32, u: u32) -> f32 {
    if (DTYPE == Q4_1 || DTYPE == Q5_1) {
        return f16_at(block_at(row, u) + 2u);
    }
    return 0.0;
}

// The integer values of a part of the 32-value block types (what ggml's integer dot products multiply):
// Q4_0 nibble - 8, Q4_1 nibble, Q5_0 (nibble | high << 4) - 16, Q5_1 nibble | high << 4, Q8_0 the i8.
// Q4_0, 18 B: d (f16), qs[16]. Q4_1, 20 B: d, m (f16), qs[16]. Q5_0, 22 B: d (f16), qh (u32, at an odd half-word),
// qs[16]. Q5_1, 24 B: d, m (f16), qh (u32), qs[16]. Q8_0, 34 B: d (f16), qs[32] (i8).
// y = ints · d, plus m for Q4_1 / Q5_1.
fn block_ints(blk: u32, part: u32, h: Head) -> Part {
    switch DTYPE {
        case Q4_0: {
            let q = w32(blk + 2u + 4u * part);
            return Part(vec4<f32>(lo4(q)) - 8.0, vec4<f32>(hi4(q)) - 8.0);
        }
        case Q4_1: {
            let q = w32(blk + 4u + 4u * part);
            return Part(vec4<f32>(lo4(q)), vec4<f32>(hi4(q)));
        }
        case Q5_0: {
            let q = w32(blk + 6u + 4u * part);
            return Part(vec4<f32>(lo4(q) | q5_high(h.q, part, 0u)) - 16.0, vec4<f32>(hi4(q) | q5_high(h.q, part, 16u)) - 16.0);
        }
        case Q5_1: {
            let q = w32(blk + 8u + 4u * part);
            return Part(vec4<f32>(lo4(q) | q5_high(h.q, part, 0u)), vec4<f32>(hi4(q) | q5_high(h.q, part, 16u)));
        }
        default: {
            let q = w64(blk + 2u + 8u * part);
            return Part(i8x4(q.x), i8x4(q.y));
        }
    }
}

// The fifth bits of Q5_0/Q5_1: value j (< 16) takes bit j of qh, value j + 16 takes bit j + 16.
fn q5_high(qh: u32, part: u32, upper: u32) -> vec4<u32> {
    let bits = vec4<u32>(4u * part + upper) + vec4<u32>(0u, 1u, 2u, 3u);
    return bits4(qh, bits, 1u) << vec4<u32>(4u);
}

fn block32(blk: u32, part: u32, h: Head) -> Part {
    let v = block_ints(blk, part, h);
    let m = head_min(h);
    return Part(v.a * h.f.x + m, v.b * h.f.x + m);
}

// Q4_K, 144 B: d, dmin (f16), scales[12], qs[128]. Sub-block j uses qs[32 (j / 2) ..][l], low nibbles for even j and
// high nibbles for odd j (two sub-blocks share 32 bytes). y = d * sc(j) * nibble - dmin * m(j).
fn q4_k(blk: u32, u: u32, part: u32, h: Head) -> Part {
    let j = u & 7u;
    let q = w64(blk + 16u + 32u * (j >> 1u) + 8u * part);
    let shift = BYTE_SHIFTS + vec4<u32>(4u * (j & 1u));
    let a = bits4(q.x, shift, 15u);
    let b = bits4(q.y, shift, 15u);
    return Part(vec4<f32>(a) * h.f.x - h.f.y, vec4<f32>(b) * h.f.x - h.f.y);
}

// Q5_K, 176 B: d, dmin (f16), scales[12], qh[32], qs[128]. As Q4_K, plus 16 when bit j of qh[l] is set: qh is
// indexed by l alone (ggml shifts its bit masks by 2 per 64 values, which is bit j of sub-block j).
fn q5_k(blk: u32, u: u32, part: u32, h: Head) -> Part {
    let j = u & 7u;
    let q = w64(blk + 48u + 32u * (j >> 1u) + 8u * part);
    let hi = w64(blk + 16u + 8u * part);
    let shift = BYTE_SHIFTS + vec4<u32>(4u * (j & 1u));
    let hshift = BYTE_SHIFTS + vec4<u32>(j);
    let a = bits4(q.x, shift, 15u) | (bits4(hi.x, hshift, 1u) << vec4<u32>(4u));
    let b = bits4(q.y, shift, 15u) | (bits4(hi.y, hshift, 1u) << vec4<u32>(4u));
    return Part(vec4<f32>(a) * h.f.x - h.f.y, vec4<f32>(b) * h.f.x - h.f.y);
}

// Q6_K, 210 B: ql[128], qh[64], scales[16] (i8), d (f16) last. Each half n (128 values) uses ql[64n..], qh[32n..],
// scales[8n..]; its quarter k (32 values, value l) is: k=0 low nibble of ql[l], k=1 low nibble of ql[l + 32],
// k=2 high nibble of ql[l], k=3 high nibble of ql[l + 32], with bits 2k..2k+1 of qh[l] on top, minus 32, times
// d * scales[8n + 2k + l / 16]. Unit j (0..8) is half j / 4, quarter j % 4; a part's 8 values share one scale.
fn q6_k(blk: u32, u: u32, part: u32, h: Head) -> Part {
    let j = u & 7u;
    let n = j >> 2u;
    let k = j & 3u;
    let ds = select(h.f.x, h.f.y, part >= 2u);
    let ql = w64(blk + 64u * n + 32u * (k & 1u) + 8u * part);
    let qh = w64(blk + 128u + 32u * n + 8u * part);
    let lshift = BYTE_SHIFTS + vec4<u32>(4u * (k >> 1u));
    let hshift = BYTE_SHIFTS + vec4<u32>(2u * k);
    let a = bits4(ql.x, lshift, 15u) | (bits4(qh.x, hshift, 3u) << vec4<u32>(4u));
    let b = bits4(ql.y, lshift, 15u) | (bits4(qh.y, hshift, 3u) << vec4<u32>(4u));
    return Part(ds * (vec4<f32>(a) - 32.0), ds * (vec4<f32>(b) - 32.0));
}

// Float rows: value i of the row, 0 past the row's end. A row starts at an odd half-word when F16/BF16 cols is odd.
fn float_at(row: u32, i: u32) -> f32 {
    if (i >= p.cols) {
        return 0.0;
    }
    if (DTYPE == F32) {
        return bitcast<f32>(w[(row >> 2u) + i]);
    }
    let h = w16(row + 2u * i);
    if (DTYPE == F16) {
        return unpack2x16float(h).x;
    }
    return bitcast<f32>(h << 16u);
}

// Two f16/bf16 values from one 32-bit word, the lower half first.
fn halves(q: u32) -> vec2<f32> {
    if (DTYPE == F16) {
        return unpack2x16float(q);
    }
    return vec2<f32>(bitcast<f32>(q << 16u), bitcast<f32>(q & 0xffff0000u));
}

fn float_part(row: u32, u: u32, part: u32) -> Part {
    let i = u * 32u + 8u * part;
    if (i + 8u <= p.cols) {
        if (DTYPE == F32) {
            let o = (row >> 2u) + i;
            return Part(
                bitcast<vec4<f32>>(vec4<u32>(w[o], w[o + 1u], w[o + 2u], w[o + 3u])),
                bitcast<vec4<f32>>(vec4<u32>(w[o + 4u], w[o + 5u], w[o + 6u], w[o + 7u])),
            );
        }
        let o = row + 2u * i;
        return Part(
            vec4<f32>(halves(w32(o)), halves(w32(o + 4u))),
            vec4<f32>(halves(w32(o + 8u)), halves(w32(o + 12u))),
        );
    }
    return Part(
        vec4<f32>(float_at(row, i), float_at(row, i + 1u), float_at(row, i + 2u), float_at(row, i + 3u)),
        vec4<f32>(float_at(row, i + 4u), float_at(row, i + 5u), float_at(row, i + 6u), float_at(row, i + 7u)),
    );
}

// Part `part` of unit u of the weight row that starts at byte `row` of the buffer, given the unit's head.
fn dequant_part(row: u32, u: u32, part: u32, h: Head) -> Part {
    let blk = block_at(row, u);
    switch DTYPE {
        case Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: { return block32(blk, part, h); }
        case Q4_K: { return q4_k(blk, u, part, h); }
        case Q5_K: { return q5_k(blk, u, part, h); }
        case Q6_K: { return q6_k(blk, u, part, h); }
        default: { return float_part(row, u, part); }
    }
}

// Part `part` of unit u of the weight row that starts at byte `row` of the buffer.
fn dequant8(row: u32, u: u32, part: u32) -> Part {
    return dequant_part(row, u, part, unit_head(row, u));
}
