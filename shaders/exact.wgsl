// Arithmetic of the exact path (GpuOptions::exact): results equal the CPU backend's bit for bit.
//
// The CPU backend follows ggml, which fuses its multiply-adds (one rounding) and rounds every other operation once.
// WGSL promises correctly rounded +, - and * on f32, but lets fma(a, b, c) round twice (lavapipe does) and lets
// division and sqrt miss by ulps. So the exact kernels build what they need from + - * alone:
//   fma_rn(a, b, c)  a·b + c rounded once: Dekker's exact product, an exact sum, and Boldo and Melquiond's rounding
//                    to odd of the low parts ("Emulation of FMA and correctly rounded sums", IEEE TC 2008);
//   div_rn, sqrt_rn  the quotient / root from the hardware, then corrected to the correctly rounded neighbour;
//   expf_v           ggml_v_expf (vec.h, AVX2 + FMA), the polynomial exp ggml's softmax and SiLU use;
//   df_*             a float-float pair (hi + lo, about 48 bits) for the sums ggml keeps in double precision.
// None of this works if the compiler reassociates or contracts floating-point expressions; the kernel tests
// (engine/src/backend/gpu/exact.rs) check every helper on the adapter against the CPU's own arithmetic.
// Values are assumed normal: no overflow, and products far above the subnormal range.
//
// Shader compilers simplify floating-point algebra as if it were exact (Mesa folds s - (s - a) into a), which
// erases the error terms these helpers compute. `opaque` hides a value behind an XOR with a zero the compiler
// cannot know: every entry point that uses these helpers must first call exact_init with a uniform that is 0 at
// run time (a kernel that forgets gets wrong bits, which its test reports).
var<private> opaque_zero: u32;

fn exact_init(runtime_zero: u32) {
    opaque_zero = runtime_zero;
}

fn opaque(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) ^ opaque_zero);
}

// (s, e) with s = a + b rounded and s + e = a + b exactly (Knuth's TwoSum).
fn two_sum(a: f32, b: f32) -> vec2<f32> {
    let s = opaque(a + b);
    let bb = opaque(s - a);
    let e = (a - (s - bb)) + (b - bb);
    return vec2<f32>(s, e);
}

// Veltkamp's split of a into 12 + 12 significant bits: hi + lo = a exactly. 4097 · a must not overflow, so huge
// values (expf_v's results near its range end) are split scaled down by a power of two, which is exact.
fn split12(a: f32) -> vec2<f32> {
    let big = abs(a) > 0x1p100f;
    let x = select(a, a * 0x1p-40f, big);
    let c = opaque(4097.0 * x);
    let hi = c - opaque(c - x);
    let parts = vec2<f32>(hi, x - hi);
    return select(parts, parts * 0x1p40f, big);
}

// (p, e) with p = a · b rounded and p + e = a · b exactly (Dekker's TwoProduct, no fma needed).
fn two_prod(a: f32, b: f32) -> vec2<f32> {
    let p = a * b;
    let x = split12(a);
    let y = split12(b);
    let e = ((x.x * y.x - p) + x.x * y.y + x.y * y.x) + x.y * y.y;
    return vec2<f32>(p, e);
}

// a + b rounded to odd: when inexact, the neighbour of the rounded sum whose last significand bit is 1.
fn add_round_odd(a: f32, b: f32) -> f32 {
    let t = two_sum(a, b);
    var bits = bitcast<u32>(t.x);
    if (t.y != 0.0 && (bits & 1u) == 0u) {
        // Step the magnitude towards the exact sum (t.x is never 0 when t.y is not).
        if ((t.y > 0.0) == (t.x > 0.0)) {
            bits += 1u;
        } else {
            bits -= 1u;
        }
    }
    return bitcast<f32>(bits);
}

// a · b + c with one rounding, as a hardware fma (x86's vfmadd, Rust's f32::mul_add) gives it.
fn fma_rn(a: f32, b: f32, c: f32) -> f32 {
    let u = two_prod(a, b);
    let t = two_sum(c, u.x);
    return t.x + add_round_odd(t.y, u.y);
}

// The f32 next to v in the direction of `towards_positive` (v finite and nonzero).
fn step_ulp(v: f32, towards_positive: bool) -> f32 {
    let bits = bitcast<u32>(v);
    if ((v > 0.0) == towards_positive) {
        return bitcast<f32>(bits + 1u);
    }
    return bitcast<f32>(bits - 1u);
}

// x / y correctly rounded (ties to even). The hardware quotient is within a few ulps; each step moves it one ulp
// towards the exact quotient while that brings the remainder x - q·y (exact: fma_rn) closer to zero.
fn div_rn(x: f32, y: f32) -> f32 {
    var q = x / y;
    if (q == 0.0 || x == 0.0) {
        return q;
    }
    var r = fma_rn(-q, y, x);
    for (var i = 0; i < 4; i++) {
        if (r == 0.0) {
            break;
        }
        // The exact quotient lies on the side of q that r · y points to.
        let c = step_ulp(q, (r > 0.0) == (y > 0.0));
        let rc = fma_rn(-c, y, x);
        if (abs(rc) < abs(r) || (abs(rc) == abs(r) && (bitcast<u32>(c) & 1u) == 0u)) {
            q = c;
            r = rc;
        } else {
            break;
        }
    }
    return q;
}

// sqrt(x) correctly rounded for x > 0 (a square root is never halfway between two floats): the hardware root, or
// the neighbour whose square is nearer to x.
fn sqrt_rn(x: f32) -> f32 {
    var s = sqrt(x);
    if (x <= 0.0) {
        return s;
    }
    for (var i = 0; i < 4; i++) {
        let r = abs(fma_rn(s, s, -x));
        let up = step_ulp(s, true);
        let down = step_ulp(s, false);
        if (abs(fma_rn(up, up, -x)) < r) {
            s = up;
        } else if (abs(fma_rn(down, down, -x)) < r) {
            s = down;
        } else {
            break;
        }
    }
    return s;
}

// ggml_v_expf (AVX2 + FMA), one lane, operation for operation (CPU twin: backend/cpu/ops.rs expf_v).
fn expf_v(x: f32) -> f32 {
    let r = bitcast<f32>(0x4b400000u);
    let z = fma_rn(x, bitcast<f32>(0x3fb8aa3bu), r);
    let n = z - r;
    let b = fma_rn(-n, bitcast<f32>(0x35bfbe8eu), fma_rn(-n, bitcast<f32>(0x3f317200u), x));
    let e = bitcast<u32>(z) << 23u;
    let k = bitcast<f32>(e + 0x3f800000u);
    let u = b * b;
    let j = fma_rn(
        fma_rn(fma_rn(bitcast<f32>(0x3c072010u), b, bitcast<f32>(0x3d2b9f17u)), u,
               fma_rn(bitcast<f32>(0x3e2aaf33u), b, bitcast<f32>(0x3efffedbu))),
        u,
        bitcast<f32>(0x3f7ffff6u) * b);
    if (abs(n) <= 126.0) {
        return fma_rn(j, k, k);
    }
    let g = select(0u, 0x82000000u, n <= 0.0);
    let s1 = bitcast<f32>(g + 0x7f000000u);
    let s2 = bitcast<f32>(e - g);
    if (abs(n) > 192.0) {
        return s1 * s1;
    }
    return fma_rn(s2, j, s2) * s1;
}

// The horizontal sum of eight AVX lanes as ggml (and the CPU backend's hsum8) adds them.
fn hsum8(l0: f32, l1: f32, l2: f32, l3: f32, l4: f32, l5: f32, l6: f32, l7: f32) -> f32 {
    return ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7));
}

// A float-float accumulator (hi, lo) plus x: stands in for ggml's double-precision sums. It keeps about 48 bits,
// so it differs from a double only when the double's own rounding would matter to the f32 taken from it.
fn df_add(a: vec2<f32>, x: f32) -> vec2<f32> {
    let t = two_sum(a.x, x);
    return two_sum(t.x, t.y + a.y);
}

// (hi + lo) / n rounded to f32 for an integer-valued n: the quotient of hi, corrected by the exact remainder.
fn df_div(a: vec2<f32>, n: f32) -> f32 {
    let q = div_rn(a.x, n);
    // The remainder hi - q·n (exact) plus lo, over n, is what q misses.
    let r = fma_rn(-q, n, a.x) + a.y;
    return q + r / n;
}
