//! The few C math library functions whose exact results shape the CPU backend's logits, written out so that every
//! target computes them the same way — and the way llama.cpp's x86-64 build does through glibc.
//!
//! `f32::sin` and friends call the platform's libm: glibc natively (whose x86-64 build picks `-mfma` variants at run
//! time), a Rust port of musl in wasm. The two disagree in the last bit for about 1% of RoPE angles, which is enough
//! to move an 8-bit-rounded activation and, a few tokens later, a greedy choice. So RoPE takes its sines and cosines
//! from here: ARM's Optimized Routines `sinf`/`cosf` (MIT licence), the code glibc ≥ 2.28 ships, with each `a + b·c`
//! fused as GCC contracts it in glibc's FMA variant. `fma` gives a correctly rounded fused multiply-add where the
//! hardware has none (wasm32), so these and the ops' own fused multiply-adds round as on x86-64 with FMA.

/// a·b + c rounded once. Natively `mul_add` (one instruction with FMA hardware, a correct libm call otherwise).
#[cfg(not(target_arch = "wasm32"))]
#[inline(always)]
pub(crate) fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// a·b + c rounded once, on wasm32 (which has no FMA instruction) through f64: the product of two f32s is exact in
/// f64, the f64 sum rounds once, and narrowing it to f32 is then right except where the f64 sum lands exactly
/// halfway between two f32s — there the exact error (TwoSum) says which way to nudge it. Subnormal f32 results,
/// where the halfway point sits elsewhere, take the slow correct route.
#[cfg(target_arch = "wasm32")]
#[inline(always)]
pub(crate) fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_feature = "relaxed-simd")]
    if super::relaxed::fused() {
        use core::arch::wasm32::*;
        let (a, b, c) = (f32x4_splat(a), f32x4_splat(b), f32x4_splat(c));
        return f32x4_extract_lane::<0>(f32x4_relaxed_madd(a, b, c));
    }
    fma_via_f64(a, b, c)
}

#[inline(always)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn fma_via_f64(a: f32, b: f32, c: f32) -> f32 {
    let ab = a as f64 * b as f64;
    let c = c as f64;
    let s = ab + c;
    let bits = s.to_bits();
    if bits & 0x1fff_ffff != 0x1000_0000 || !s.is_finite() {
        if s != 0.0 && s.abs() < f32::MIN_POSITIVE as f64 {
            return fma_slow(a, b, c as f32);
        }
        return s as f32;
    }
    let bb = s - ab;
    let err = (ab - (s - bb)) + (c - bb);
    if err == 0.0 {
        return s as f32;
    }
    // One f64 ulp towards the exact value, so that narrowing rounds the way the exact sum would.
    let nudged = if (err > 0.0) == (s > 0.0) {
        bits + 1
    } else {
        bits - 1
    };
    f64::from_bits(nudged) as f32
}

#[cold]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn fma_slow(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

#[inline(always)]
fn fma64(a: f64, b: f64, c: f64) -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        a.mul_add(b, c)
    }
    #[cfg(target_arch = "wasm32")]
    {
        fma64_wasm(a, b, c)
    }
}

/// f64 fused multiply-add on wasm32: compiler-builtins' correctly rounded software `fma`. Only RoPE's sin/cos use it
/// (a few per pair and position), so its cost does not matter.
#[cfg(target_arch = "wasm32")]
#[inline(never)]
fn fma64_wasm(a: f64, b: f64, c: f64) -> f64 {
    a.mul_add(b, c)
}

struct SinCos {
    sign: [f64; 4],
    c0: f64,
    c1: f64,
    c2: f64,
    c3: f64,
    c4: f64,
}

/// The second entry's cosine polynomial is negated (−cos for free in quadrants 2 and 3).
const TABLE: [SinCos; 2] = [
    SinCos {
        sign: [1.0, -1.0, -1.0, 1.0],
        c0: 1.0,
        c1: f64::from_bits(0xbfdf_ffff_fd0c_621c),
        c2: f64::from_bits(0x3fa5_5553_e106_8f19),
        c3: f64::from_bits(0xbf56_c087_e89a_359d),
        c4: f64::from_bits(0x3ef9_9343_027b_f8c3),
    },
    SinCos {
        sign: [1.0, -1.0, -1.0, 1.0],
        c0: -1.0,
        c1: f64::from_bits(0x3fdf_ffff_fd0c_621c),
        c2: f64::from_bits(0xbfa5_5553_e106_8f19),
        c3: f64::from_bits(0x3f56_c087_e89a_359d),
        c4: f64::from_bits(0xbef9_9343_027b_f8c3),
    },
];
const S1: f64 = f64::from_bits(0xbfc5_5554_5995_a603);
const S2: f64 = f64::from_bits(0x3f81_1076_0523_0bc4);
const S3: f64 = f64::from_bits(0xbf29_94eb_3774_cf24);
/// 2/π · 2^24 (x86-64 has no round-to-int intrinsic path, so the quadrant comes from bits 24..31).
const HPI_INV: f64 = f64::from_bits(0x4164_5f30_6dc9_c883);
const HPI: f64 = f64::from_bits(0x3ff9_21fb_5444_2d18);
/// 2π · 2^-64.
const PI63: f64 = f64::from_bits(0x3c19_21fb_5444_2d18);
const PIO4: f32 = f32::from_bits(0x3f49_0fdb);
/// 4/π to 192 bits, 8 new bits per entry.
const INV_PIO4: [u32; 24] = [
    0xa2, 0xa2f9, 0xa2f983, 0xa2f9836e, 0xf9836e4e, 0x836e4e44, 0x6e4e4415, 0x4e441529, 0x441529fc,
    0x1529fc27, 0x29fc2757, 0xfc2757d1, 0x2757d1f5, 0x57d1f534, 0xd1f534dd, 0xf534ddc0, 0x34ddc0db,
    0xddc0db62, 0xc0db6295, 0xdb629599, 0x6295993c, 0x95993c43, 0x993c4390, 0x3c439041,
];

fn abstop12(x: f32) -> u32 {
    (x.to_bits() >> 20) & 0x7ff
}

/// `sinf_poly`: the sine polynomial for even quadrants, the cosine one for odd.
#[inline(always)]
fn poly(x: f64, x2: f64, t: &SinCos, n: i32) -> f32 {
    if n & 1 == 0 {
        let x3 = x * x2;
        let s1 = fma64(x2, S3, S2);
        let x7 = x3 * x2;
        let s = fma64(x3, S1, x);
        fma64(x7, s1, s) as f32
    } else {
        let x4 = x2 * x2;
        let c2 = fma64(x2, t.c4, t.c3);
        let c1 = fma64(x2, t.c1, t.c0);
        let x6 = x4 * x2;
        let c = fma64(x4, t.c2, c1);
        fma64(x6, c2, c) as f32
    }
}

/// x mod π/2 in [−π/4, π/4] and the quadrant, for |x| < 120.
#[inline(always)]
fn reduce_fast(x: f64) -> (f64, i32) {
    let r = x * HPI_INV;
    let n = ((r as i32).wrapping_add(0x80_0000)) >> 24;
    (fma64(-(n as f64), HPI, x), n)
}

/// The same for large |x|, in exact fixed point with 4/π to 192 bits (the sign of `xi` is ignored).
fn reduce_large(xi: u32) -> (f64, i32) {
    let arr = &INV_PIO4[((xi >> 26) & 15) as usize..];
    let shift = (xi >> 23) & 7;
    let xi = ((xi & 0xff_ffff) | 0x80_0000) << shift;
    let mut res0 = xi.wrapping_mul(arr[0]) as u64;
    let res1 = xi as u64 * arr[4] as u64;
    let res2 = xi as u64 * arr[8] as u64;
    res0 = (res2 >> 32) | (res0 << 32);
    res0 = res0.wrapping_add(res1);
    let n = res0.wrapping_add(1 << 61) >> 62;
    res0 = res0.wrapping_sub(n << 62);
    (res0 as i64 as f64 * PI63, n as i32)
}

enum Which {
    Sin,
    Cos,
}

#[inline(always)]
fn sincos(y: f32, which: Which) -> f32 {
    let x = y as f64;
    let top = abstop12(y);
    if top < abstop12(PIO4) {
        let x2 = x * x;
        return match which {
            Which::Sin if top < abstop12(f32::from_bits(0x3980_0000)) => y, // |y| < 2^-12
            Which::Cos if top < abstop12(f32::from_bits(0x3980_0000)) => 1.0,
            Which::Sin => poly(x, x2, &TABLE[0], 0),
            Which::Cos => poly(x, x2, &TABLE[0], 1),
        };
    }
    let (r, n, sign_q) = if top < abstop12(120.0) {
        let (r, n) = reduce_fast(x);
        (r, n, n)
    } else if top < abstop12(f32::INFINITY) {
        let xi = y.to_bits();
        let (r, n) = reduce_large(xi);
        (r, n, n + (xi >> 31) as i32)
    } else {
        return f32::NAN;
    };
    // The sign and the (possibly negated) table follow the quadrant (plus the sign of a large argument); cosf is
    // sinf a quadrant on, which swaps the polynomials.
    let s = TABLE[0].sign[(sign_q & 3) as usize];
    let t = if sign_q & 2 != 0 {
        &TABLE[1]
    } else {
        &TABLE[0]
    };
    match which {
        Which::Sin => poly(r * s, r * r, t, n),
        Which::Cos => poly(r * s, r * r, t, n ^ 1),
    }
}

/// sinf as glibc computes it on x86-64 with FMA.
pub(crate) fn sinf(x: f32) -> f32 {
    sincos(x, Which::Sin)
}

/// cosf as glibc computes it on x86-64 with FMA.
pub(crate) fn cosf(x: f32) -> f32 {
    sincos(x, Which::Cos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The platform's sinf/cosf, which this module must equal where the platform is glibc on x86-64 with FMA (as
    /// where llama.cpp's references were made); elsewhere the comparison says nothing and is skipped.
    fn reference_platform() -> bool {
        cfg!(all(
            target_arch = "x86_64",
            target_os = "linux",
            target_env = "gnu"
        )) && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("avx2")
    }

    #[test]
    fn sin_and_cos_equal_glibc_on_a_sweep_of_all_floats_and_every_rope_angle() {
        if !reference_platform() {
            eprintln!("skipping: the reference is glibc's x86-64 FMA sinf/cosf");
            return;
        }
        let mut bad = Vec::new();
        let mut check = |x: f32| {
            if sinf(x).to_bits() != x.sin().to_bits() || cosf(x).to_bits() != x.cos().to_bits() {
                bad.push(x);
            }
        };
        // Every 61st bit pattern (70 million floats, both signs, all ranges, NaN and infinities).
        let mut i = 0u64;
        while i <= u32::MAX as u64 {
            check(f32::from_bits(i as u32));
            i += 61;
        }
        // RoPE's angles as ggml computes them, for the usual bases and head sizes.
        for base in [10_000f32, 100_000.0, 500_000.0, 1_000_000.0] {
            for head_dim in [64usize, 128, 256] {
                let scale = base.powf(-2.0 / head_dim as f32);
                for pos in 0..8192 {
                    let mut theta = pos as f32;
                    for _ in 0..head_dim / 2 {
                        check(theta);
                        theta *= scale;
                    }
                }
            }
        }
        let nan_mismatch = bad.iter().all(|x| x.is_nan());
        assert!(
            bad.is_empty() || nan_mismatch,
            "{} inputs differ from glibc, e.g. {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
    }

    #[test]
    fn fma_through_f64_is_correctly_rounded() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let check = |a: f32, b: f32, c: f32| {
            let want = a.mul_add(b, c);
            let got = fma_via_f64(a, b, c);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "fma({a:e}, {b:e}, {c:e}) = {got:e}, not {want:e}"
            );
        };
        for _ in 0..2_000_000 {
            let a = f32::from_bits(rng.random());
            let b = f32::from_bits(rng.random());
            let c = f32::from_bits(rng.random());
            check(a, b, c);
            // Magnitudes that meet, so the sums cancel and round in interesting places.
            let a: f32 = rng.random_range(-4.0..4.0);
            let b: f32 = rng.random_range(-4.0..4.0);
            let c = -(a * b) * rng.random_range(0.5..1.5f32);
            check(a, b, c);
        }
        // Sums whose f64 value falls exactly halfway between two f32s: a·b is 1 + 2^-24 + tiny, c cancels the tiny
        // part except for an error below f64's precision.
        for k in 1..2000u32 {
            let a = 1.0 + k as f32 * f32::EPSILON;
            let b = 1.0 + f32::EPSILON / 2.0 * (k % 2) as f32;
            for c in [
                f32::EPSILON / 2.0,
                -f32::EPSILON / 2.0,
                1e-30,
                -1e-30,
                3.0 * f32::EPSILON / 4.0,
            ] {
                check(a, b, c);
                check(a, -b, c);
            }
        }
        check(1e-20, 1e-20, 1e-45);
        check(f32::MIN_POSITIVE, 0.5, f32::from_bits(1));
        check(3.0e38, 2.0, -3.0e38);
    }
}
