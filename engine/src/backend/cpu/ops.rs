//! Element-wise and row ops with ggml's CPU arithmetic (ggml-cpu/ops.cpp, vec.h), operation for operation.
//!
//! Quantized matmuls round their activations to 8 bits, so an ulp of difference upstream occasionally moves an
//! activation across a rounding boundary and the logits by a visible amount. Computing these ops the way ggml does
//! keeps the CPU backend on llama.cpp's exact trajectory instead of merely close to it.
//!
//! ggml fuses multiply-adds (its SIMD code explicitly, and GCC contracts `a*b + c` in its scalar C), so `fma` below
//! is a true fused multiply-add wherever the hardware has one; the hot loops are compiled a second time with AVX2 +
//! FMA enabled and picked at run time, which turns those into single instructions and lets LLVM vectorise them.

/// A fused multiply-add, a·b + c rounded once, on every target (wasm32 has no FMA instruction: see
/// [`super::libm::fma`]), so the portable kernels give the same bits in wasm as natively.
pub(crate) use super::libm::fma;

/// Whether the AVX2 + FMA compilations of the hot loops may run (checked once; cached by std).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn fma_available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Whether the CPU has AVX-512 VNNI on 256-bit vectors (a byte dot product into 32-bit lanes in one instruction),
/// and the kernels may use it: [`allow_vnni`] turns it off, so the tests hold the AVX2 kernels on such CPUs too.
#[cfg(target_arch = "x86_64")]
pub(crate) fn vnni_available() -> bool {
    VNNI_ALLOWED.load(std::sync::atomic::Ordering::Relaxed)
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vl")
}

#[cfg(target_arch = "x86_64")]
static VNNI_ALLOWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Lets the AVX2 kernels use AVX-512 VNNI where the CPU has it (the default), or not — the same bits either way.
pub fn allow_vnni(allowed: bool) {
    #[cfg(target_arch = "x86_64")]
    VNNI_ALLOWED.store(allowed, std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = allowed;
}

/// Defines `$name(simd, args…)` calling `$imp(args…)` (an `#[inline(always)]` function), through a copy compiled
/// with AVX2 + FMA when `simd` is set and the CPU has them.
macro_rules! fma_dispatch {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $imp:path;) => {
        $(#[$doc])*
        $vis fn $name(simd: bool, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? {
                    $imp($($arg),*)
                }
                if simd && $crate::backend::cpu::ops::fma_available() {
                    // SAFETY: the CPU supports AVX2 and FMA.
                    return unsafe { fast($($arg),*) };
                }
            }
            let _ = simd;
            $imp($($arg),*)
        }
    };
}
pub(crate) use fma_dispatch;

/// Asks for the cache lines of `data[from..from + len]` (what lies inside `data`) ahead of a loop that streams it:
/// on this project's machines the hardware prefetchers alone leave such loops waiting on memory.
#[inline(always)]
pub(crate) fn prefetch<T>(data: &[T], from: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let size = std::mem::size_of::<T>().max(1);
        let end = from.saturating_add(len).min(data.len());
        for at in (from..end).step_by((64 / size).max(1)) {
            // SAFETY: `at` is inside `data`; a prefetch reads nothing architecturally.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(at).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, from, len);
}

/// RMSNorm of each `w.len()`-value group of `x`, times `w` (`ggml_compute_forward_rms_norm_f32` + `ggml_mul`):
/// the squares summed in f64, mean rounded to f32, scale = 1 / sqrtf(mean + eps), y = (x * scale) * w.
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    if n == 0 {
        return;
    }
    for (xr, yr) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0f32 / (mean + eps).sqrt();
        for ((y, &v), &wi) in yr.iter_mut().zip(xr).zip(w) {
            *y = v * scale * wi;
        }
    }
}

/// ggml_v_expf (vec.h, the AVX2 + FMA variant), one lane: a polynomial exp within ~1.5 ulp of expf, reproduced
/// operation for operation (each `mul_add` is one FMA; the integer steps work on the float bits).
#[inline(always)]
pub(crate) fn expf_v(x: f32) -> f32 {
    let c = f32::from_bits;
    let r = c(0x4b40_0000); // 0x1.8p23
    let z = fma(x, c(0x3fb8_aa3b), r); // log2(e)
    let n = z - r;
    // b = x - n·ln2 in two parts (fnmadd = -(a·b) + c, fused).
    let b = fma(-n, c(0x35bf_be8e), fma(-n, c(0x3f31_7200), x));
    let e = z.to_bits() << 23;
    let k = c(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = fma(
        fma(
            fma(c(0x3c07_2010), b, c(0x3d2b_9f17)),
            u,
            fma(c(0x3e2a_af33), b, c(0x3eff_fedb)),
        ),
        u,
        c(0x3f7f_fff6) * b,
    );
    // The SIMD code blends on |n| > 126, which is false for NaN: NaN takes this branch too.
    if n.abs() <= 126.0 || n.is_nan() {
        return fma(j, k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = c(g.wrapping_add(0x7f00_0000));
    let s2 = c(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        fma(s2, j, s2) * s1
    }
}

fma_dispatch! {
    /// `act(gate) * up` row by row, as ggml's fused swiglu (`ggml_vec_swiglu_f32`): lanes of 8 use ggml_v_silu
    /// (x / (1 + ggml_v_expf(0 - x))), a row's last `n % 8` values the scalar x / (1 + expf(-x)).
    pub(crate) fn swiglu(gate: &[f32], up: &[f32], width: usize, out: &mut [f32]) = swiglu_impl;
}

#[inline(always)]
fn swiglu_impl(gate: &[f32], up: &[f32], width: usize, out: &mut [f32]) {
    for ((g, u), y) in gate
        .chunks_exact(width)
        .zip(up.chunks_exact(width))
        .zip(out.chunks_exact_mut(width))
    {
        let vec_end = width - width % 8;
        for i in 0..vec_end {
            y[i] = g[i] / (1.0 + expf_v(0.0 - g[i])) * u[i];
        }
        for i in vec_end..width {
            y[i] = g[i] / (1.0 + (-g[i]).exp()) * u[i];
        }
    }
}

/// ggml_gelu_f32 as llama.cpp's build computes it: GCC contracts `1 + GELU_COEF_A·x·x` into an FMA.
fn gelu_f32(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    #[allow(clippy::excessive_precision)]
    const SQRT_2_OVER_PI: f32 = 0.797_884_560_802_865_355_879_892_119_868_76;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * fma(GELU_COEF_A * x, x, 1.0)).tanh())
}

/// ggml's `ggml_table_gelu_f16`: GELU of every f16, rounded to f16 (ggml looks activations up in it), then one
/// entry of padding, so that a 32-bit gather of the last entry stays inside.
fn gelu_table() -> &'static [u16] {
    static TABLE: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|h| half::f16::from_f32(gelu_f32(half::f16::from_bits(h).to_f32())).to_bits())
            .chain([0])
            .collect()
    })
}

/// `gelu_tanh(gate) * up` as ggml's geglu (`ggml_vec_geglu_f32` with GGML_GELU_FP16): the gate rounded to f16 and
/// looked up in the GELU table, except below -10 (0) and from 10 up (the identity).
pub(crate) fn geglu(simd: bool, gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd && fma_available() && is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU supports AVX2, FMA and F16C.
        unsafe { geglu_avx2(gate, up, out) };
        return;
    }
    let _ = simd;
    geglu_portable(gate, up, out)
}

/// [`geglu`] eight values at a time: F16C's conversions round as `half` does (to nearest, ties to even), and the
/// table is gathered.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn geglu_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let table = gelu_table();
    let n = out.len().min(gate.len()).min(up.len());
    let (low, high) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
    let mut i = 0;
    while i + 8 <= n {
        let x = _mm256_loadu_ps(gate.as_ptr().add(i));
        let u = _mm256_loadu_ps(up.as_ptr().add(i));
        let idx = _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
        // Entry k is the low half of the 32 bits at byte 2k (the padding entry keeps k = 65535 inside).
        let g = _mm256_i32gather_epi32::<2>(table.as_ptr() as *const i32, idx);
        let g = _mm256_and_si256(g, _mm256_set1_epi32(0xFFFF));
        let g = _mm_packus_epi32(_mm256_castsi256_si128(g), _mm256_extracti128_si256::<1>(g));
        let y = _mm256_mul_ps(_mm256_cvtph_ps(g), u);
        let y = _mm256_blendv_ps(y, _mm256_mul_ps(x, u), _mm256_cmp_ps::<_CMP_GE_OQ>(x, high));
        let y = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(x, low), y);
        _mm256_storeu_ps(out.as_mut_ptr().add(i), y);
        i += 8;
    }
    geglu_portable(&gate[i..n], &up[i..n], &mut out[i..n]);
}

fn geglu_portable(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let table = gelu_table();
    for ((&x, &u), y) in gate.iter().zip(up).zip(out.iter_mut()) {
        *y = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            half::f16::from_bits(table[half::f16::from_f32(x).to_bits() as usize]).to_f32() * u
        };
    }
}

/// The GELU table, for checking it against ggml's.
pub fn gelu_table_bits() -> &'static [u16] {
    &gelu_table()[..=u16::MAX as usize]
}

/// ggml builds RoPE angles (`ggml_rope_cache_init`) as theta_0 = pos, theta_{i+1} = theta_i · theta_scale, each
/// product rounded to f32, then cosf/sinf. That needs theta_scale = base^(-2/d), which is `inv_freq[1]` when the
/// table is the plain geometric series the model computes (each entry within rounding of r^i); None for tables
/// with llama3 frequency factors folded in, which are then used as theta = pos · inv_freq[i].
pub(crate) fn rope_theta_scale(inv_freq: &[f32]) -> Option<f32> {
    let r = match inv_freq {
        [first, second, ..] if *first == 1.0 => *second as f64,
        _ => return None,
    };
    let geometric = inv_freq
        .iter()
        .enumerate()
        .all(|(i, &f)| ((f as f64) - r.powi(i as i32)).abs() <= 1e-4 * r.powi(i as i32));
    geometric.then_some(r as f32)
}

/// cos and sin of every pair's angle at position `pos` (see [`rope_theta_scale`]).
pub(crate) fn rope_angles(
    inv_freq: &[f32],
    theta_scale: Option<f32>,
    pos: usize,
    cos: &mut [f32],
    sin: &mut [f32],
) {
    let mut theta = pos as f32;
    for (i, (c, s)) in cos.iter_mut().zip(sin.iter_mut()).enumerate() {
        let t = match theta_scale {
            Some(scale) => {
                let t = theta;
                theta *= scale;
                t
            }
            None => pos as f32 * inv_freq[i],
        };
        // glibc's algorithm on every target: the platform's own sinf/cosf differ in the last bit (see libm.rs).
        *c = super::libm::cosf(t);
        *s = super::libm::sinf(t);
    }
}

fma_dispatch! {
    /// Rotates `x` (`[rows, heads · 2·half]`) in place by `angles` (`[rows][cos half, sin half]`, see
    /// [`rope_angles`]), pairs (i, i + 1) per head when `adjacent`, else (i, i + half).
    pub(crate) fn rope_rows(
        x: &mut [f32],
        angles: &[f32],
        heads: usize,
        half: usize,
        adjacent: bool,
    ) = rope_rows_impl;
}

#[inline(always)]
fn rope_rows_impl(x: &mut [f32], angles: &[f32], heads: usize, half: usize, adjacent: bool) {
    let width = heads * 2 * half;
    if width == 0 {
        return;
    }
    for (row, angles) in x.chunks_exact_mut(width).zip(angles.chunks_exact(2 * half)) {
        let (cos, sin) = angles.split_at(half);
        for h in row.chunks_exact_mut(2 * half) {
            for i in 0..half {
                let (a, b) = if adjacent {
                    (2 * i, 2 * i + 1)
                } else {
                    (i, i + half)
                };
                let (y0, y1) = rotate(h[a], h[b], cos[i], sin[i]);
                h[a] = y0;
                h[b] = y1;
            }
        }
    }
}

/// One RoPE rotation as ggml's `rotate_pairs` computes it in llama.cpp's build, where GCC contracts
/// `x0·c - x1·s` and `x0·s + x1·c` into fma(x0, c, -(x1·s)) and fma(x0, s, x1·c).
#[inline(always)]
pub(crate) fn rotate(x0: f32, x1: f32, c: f32, s: f32) -> (f32, f32) {
    (fma(x0, c, -(x1 * s)), fma(x0, s, x1 * c))
}

/// The 8-lane horizontal sum of tinyBLAS and ggml_vec_soft_max_f32: (lo + hi) halves, then (l0 + l2) + (l1 + l3).
#[inline(always)]
pub(crate) fn hsum8(l: &[f32; 8]) -> f32 {
    let t = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (t[0] + t[2]) + (t[1] + t[3])
}

/// GGML_F32x8_REDUCE of ggml_vec_dot_f32's four 8-lane accumulators (`lanes[8 * j + l]` = accumulator j, lane l).
#[inline(always)]
pub(crate) fn reduce_f32x32(lanes: &[f32; 32]) -> f32 {
    let x: [f32; 8] =
        std::array::from_fn(|l| (lanes[l] + lanes[16 + l]) + (lanes[8 + l] + lanes[24 + l]));
    let t = [x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

/// ggml_vec_dot_f32 (AVX2): element i goes to accumulator (i % 32) / 8, lane i % 8, by FMA; the accumulators are
/// reduced as GGML_F32x8_REDUCE does; a tail shorter than 32 is added one product at a time (not fused: checked
/// against ggml on a 48-wide head).
#[inline(always)]
pub(crate) fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let np = n - n % 32;
    let mut acc = [0f32; 32];
    for (xc, yc) in x[..np].chunks_exact(32).zip(y[..np].chunks_exact(32)) {
        for l in 0..32 {
            acc[l] = fma(xc[l], yc[l], acc[l]);
        }
    }
    let mut sum = reduce_f32x32(&acc);
    for i in np..n {
        sum += x[i] * y[i];
    }
    sum
}
