//! Quantized matrix × f32 activations with llama.cpp's CPU numerics.
//!
//! As ggml does, each activation row is quantized once per matmul to the weight type's companion format (see
//! [`super::q8`]); every weight-row · activation-row product is exact integer sums per block, combined in floats
//! exactly as the ggml kernel llama.cpp would pick for that case (`ggml_vec_dot_*`, tinyBLAS, the repacked Q4_0 /
//! Q4_K kernels or the tiled K-quant matmul: see [`super::dot`]). On x86-64 the results are llama.cpp's, bit for
//! bit. The work is split over output rows across threads.

use super::dot;
use super::q8::{self, BlockQ8K, BlockQ8_0, BlockQ8_1};
use crate::quant::{self, GgmlType};
use crate::{Error, Result};
use std::cell::RefCell;

/// A weight matrix `[rows, cols]` kept in its ggml blocks (row-major, each row a whole number of blocks).
pub struct QMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl QMatrix {
    /// Takes the raw blocks of a quantized `[rows, cols]` tensor; the length must match the shape exactly.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        if !ty.is_quantized() {
            return Err(Error::InvalidArgument(format!(
                "{} is not a block-quantized type",
                ty.name()
            )));
        }
        if !cols.is_multiple_of(ty.block_size()) {
            return Err(Error::InvalidArgument(format!(
                "a {} row of {cols} values is not a whole number of {}-value blocks",
                ty.name(),
                ty.block_size()
            )));
        }
        let expected = rows.checked_mul(cols).and_then(|n| ty.byte_len(n as u64));
        if expected != Some(data.len() as u64) {
            return Err(Error::InvalidArgument(format!(
                "{} data of shape [{rows}, {cols}] cannot be {} bytes",
                ty.name(),
                data.len()
            )));
        }
        Ok(Self {
            ty,
            rows,
            cols,
            data,
        })
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }

    /// Row `r` dequantized into `out` (`cols` values), bit-identical to ggml's dequantisation (embedding lookups).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        if r >= self.rows {
            return Err(Error::InvalidArgument(format!(
                "row {r} of a matrix with {} rows",
                self.rows
            )));
        }
        let rb = self.row_bytes();
        quant::dequantize(self.ty, &self.data[r * rb..(r + 1) * rb], out)
    }

    /// `x` is `[m, cols]` row-major; returns `x · selfᵀ` as `[m, rows]`, using AVX2 when the CPU has it.
    pub fn matmul(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        self.run(x, m, simd_available())
    }

    /// [`Self::matmul`] on the portable code path only (to check it against the SIMD one).
    pub fn matmul_portable(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        self.run(x, m, false)
    }

    /// [`QMatrix::matmul`] for rows of different sequences: every row gets the kernel (so the arithmetic) a lone
    /// row would, whatever `m` is, so a batched decode step gives each sequence the bits it would get alone.
    pub fn matmul_independent(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        self.run_as(x, m, simd_available(), 1)
    }

    /// [`QMatrix::matmul_independent`] with only the portable kernels.
    pub fn matmul_independent_portable(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        self.run_as(x, m, false, 1)
    }

    /// The product of a packed matrix (weights stacked by rows) cut into its parts: part i is `[m, widths[i]]`, the
    /// bits [`QMatrix::matmul`] (`independent`: [`QMatrix::matmul_independent`]) gives those columns, written where
    /// they belong instead of into one wide product copied apart afterwards (~3% of a prompt).
    pub fn matmul_parts(
        &self,
        x: &[f32],
        m: usize,
        widths: &[usize],
        independent: bool,
        simd: bool,
    ) -> Result<Vec<Vec<f32>>> {
        if widths.iter().sum::<usize>() != self.rows {
            return Err(Error::InvalidArgument(format!(
                "a matrix of {} rows cannot be cut into parts of {widths:?}",
                self.rows
            )));
        }
        let kernel_rows = if independent { 1 } else { m };
        self.run_parts(x, m, simd && simd_available(), kernel_rows, widths)
    }

    fn run(&self, x: &[f32], m: usize, simd: bool) -> Result<Vec<f32>> {
        self.run_as(x, m, simd, m)
    }

    fn run_as(&self, x: &[f32], m: usize, simd: bool, kernel_rows: usize) -> Result<Vec<f32>> {
        let mut parts = self.run_parts(x, m, simd, kernel_rows, &[self.rows])?;
        Ok(parts.pop().unwrap_or_default())
    }

    /// Multiplies `m` rows with the kernels llama.cpp would pick for `kernel_rows` rows, into parts of `widths`
    /// weight rows (which sum to the row count).
    fn run_parts(
        &self,
        x: &[f32],
        m: usize,
        simd: bool,
        kernel_rows: usize,
        widths: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        if m.checked_mul(self.cols) != Some(x.len()) {
            return Err(Error::InvalidArgument(format!(
                "activations of {} values are not {m} rows of {}",
                x.len(),
                self.cols
            )));
        }
        // Which ggml kernel llama.cpp's x86 build runs decides the float arithmetic (see `dot`): weights whose row
        // count is a multiple of 8 are repacked (Q4_0, Q4_K), and from 8 activation rows on K-quants go through the
        // tiled matmul.
        let repacked = self.rows.is_multiple_of(8);
        let tiled = kernel_rows >= 8;
        let w = widths;
        #[cfg(target_arch = "x86_64")]
        let vnni = simd && super::ops::vnni_available();
        // The 32-value formats' kernels, or their AVX-512 VNNI forms (x86 only: elsewhere those are never built).
        macro_rules! run32 {
            ($k:ident / $kv:ident) => {{
                #[cfg(target_arch = "x86_64")]
                let out = if vnni {
                    run::<$kv>(self, x, m, simd, w)
                } else {
                    run::<$k>(self, x, m, simd, w)
                };
                #[cfg(not(target_arch = "x86_64"))]
                let out = run::<$k>(self, x, m, simd, w);
                out
            }};
        }
        Ok(match self.ty {
            GgmlType::Q4_0 if repacked => run32!(Q4_0R / Q4_0RV),
            GgmlType::Q4_0 => run32!(Q4_0 / Q4_0V),
            GgmlType::Q4_1 => run32!(Q4_1 / Q4_1V),
            GgmlType::Q5_0 => run32!(Q5_0 / Q5_0V),
            GgmlType::Q5_1 => run32!(Q5_1 / Q5_1V),
            GgmlType::Q8_0 => run32!(Q8_0 / Q8_0V),
            // The repacked kernels take whole groups of 4 rows through their gemm, the rest through their gemv.
            GgmlType::Q4K if repacked && kernel_rows > 3 => {
                let m4 = m - m % 4;
                let mut out = run::<Q4KRG>(self, &x[..m4 * self.cols], m4, simd, w);
                let rest = run::<Q4KR>(self, &x[m4 * self.cols..], m - m4, simd, w);
                for (part, rest) in out.iter_mut().zip(rest) {
                    part.extend(rest);
                }
                out
            }
            GgmlType::Q4K if repacked => run::<Q4KR>(self, x, m, simd, w),
            GgmlType::Q4K if tiled => run::<Q4KT>(self, x, m, simd, w),
            GgmlType::Q4K => run::<Q4KV>(self, x, m, simd, w),
            GgmlType::Q5K if tiled => run::<Q5KT>(self, x, m, simd, w),
            GgmlType::Q5K => run::<Q5KV>(self, x, m, simd, w),
            GgmlType::Q6K if tiled => run::<Q6KT>(self, x, m, simd, w),
            GgmlType::Q6K => run::<Q6KV>(self, x, m, simd, w),
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                return Err(Error::InvalidArgument(format!(
                    "{} is not a block-quantized type",
                    self.ty.name()
                )))
            }
        })
    }
}

/// Whether a `ty` matrix of `rows` rows and one of `other_rows` run the same ggml kernel (so give each row the same
/// bits): llama.cpp repacks Q4_0 and Q4_K weights whose row count is a multiple of 8.
pub fn same_kernel(ty: GgmlType, rows: usize, other_rows: usize) -> bool {
    !matches!(ty, GgmlType::Q4_0 | GgmlType::Q4K)
        || rows.is_multiple_of(8) == other_rows.is_multiple_of(8)
}

#[cfg(target_arch = "x86_64")]
fn simd_available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The worker built with wasm SIMD128 has the kernels of `dot_simd128` (the portable ones stay for comparison).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn simd_available() -> bool {
    true
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
fn simd_available() -> bool {
    false
}

/// Per-thread buffers the activations are quantized into, reused across matmuls.
#[derive(Default)]
struct Scratch {
    q8_0: Vec<BlockQ8_0>,
    q8_1: Vec<BlockQ8_1>,
    q8_k: Vec<BlockQ8K>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A quantized activation format: its block length, quantizer and scratch buffer.
trait ActBlock: Copy + Default + Send + Sync {
    const VALUES: usize;
    fn quantize(simd: bool, x: &[f32], out: &mut [Self]);
    fn scratch(s: &mut Scratch) -> &mut Vec<Self>;
}

impl ActBlock for BlockQ8_0 {
    const VALUES: usize = 32;
    fn quantize(simd: bool, x: &[f32], out: &mut [Self]) {
        q8::quantize_q8_0_with(simd, x, out)
    }
    fn scratch(s: &mut Scratch) -> &mut Vec<Self> {
        &mut s.q8_0
    }
}

impl ActBlock for BlockQ8_1 {
    const VALUES: usize = 32;
    fn quantize(simd: bool, x: &[f32], out: &mut [Self]) {
        q8::quantize_q8_1_with(simd, x, out)
    }
    fn scratch(s: &mut Scratch) -> &mut Vec<Self> {
        &mut s.q8_1
    }
}

impl ActBlock for BlockQ8K {
    const VALUES: usize = 256;
    fn quantize(simd: bool, x: &[f32], out: &mut [Self]) {
        q8::quantize_q8_k_with(simd, x, out)
    }
    fn scratch(s: &mut Scratch) -> &mut Vec<Self> {
        &mut s.q8_k
    }
}

/// Quantizes `x` (`m` rows) into activation blocks and hands them to `f`, in this thread's scratch buffer unless
/// that is already in use further up the stack.
fn with_quantized<A: ActBlock, R>(x: &[f32], m: usize, simd: bool, f: impl FnOnce(&[A]) -> R) -> R {
    let blocks = x.len() / A::VALUES;
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            let buf = A::scratch(&mut scratch);
            // Every field of every block is overwritten by the quantizer, so stale contents do not matter.
            buf.resize(blocks, A::default());
            quantize_rows(x, m, simd, buf);
            f(buf)
        }
        Err(_) => {
            let mut buf = vec![A::default(); blocks];
            quantize_rows(x, m, simd, &mut buf);
            f(&buf)
        }
    })
}

/// Rows are quantized independently, so a prefill's many rows are spread over the threads.
fn quantize_rows<A: ActBlock>(x: &[f32], m: usize, simd: bool, out: &mut [A]) {
    #[cfg(threaded)]
    if m >= 4 {
        use rayon::prelude::*;
        let (cols, nb) = (x.len() / m, out.len() / m);
        out.par_chunks_mut(nb)
            .zip(x.par_chunks(cols))
            .for_each(|(o, xr)| A::quantize(simd, xr, o));
        return;
    }
    let _ = m;
    A::quantize(simd, x, out);
}

/// One weight type: the activation format it pairs with and its row dot product.
trait Kernel {
    type Act: ActBlock;
    /// Whether this kernel's x86 code is the AVX-512 VNNI form, to run inside `rows_vnni`.
    #[cfg(target_arch = "x86_64")]
    const VNNI: bool = false;
    fn dot(w: &[u8], a: &[Self::Act]) -> f32;
    /// The wasm SIMD128 kernel, bit for bit [`Kernel::dot`]; the portable code where there is none.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    #[inline(always)]
    fn dot_simd128(w: &[u8], a: &[Self::Act]) -> f32 {
        Self::dot(w, a)
    }
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2(w: &[u8], a: &[Self::Act]) -> f32;
    /// Two weight rows against one activation row; kernels that interleave them hide their FMA latency.
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot2_avx2(w0: &[u8], w1: &[u8], a: &[Self::Act]) -> [f32; 2] {
        unsafe { [Self::dot_avx2(w0, a), Self::dot_avx2(w1, a)] }
    }
    /// Two weight rows against `ACTS` activation rows (sequences of a batch), each pair with the bits of
    /// [`Kernel::dot2_avx2`]; kernels that unpack a weight block once for all of them override it.
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot2_acts_avx2(w0: &[u8], w1: &[u8], a: [&[Self::Act]; ACTS]) -> [[f32; ACTS]; 2] {
        let mut out = [[0f32; ACTS]; 2];
        for (c, a) in a.iter().enumerate() {
            let [y0, y1] = unsafe { Self::dot2_avx2(w0, w1, a) };
            out[0][c] = y0;
            out[1][c] = y1;
        }
        out
    }
    /// [`Kernel::dot2_acts_avx2`] for `WIDE` activation rows, where a long batch (a prompt) has them.
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot2_wide_avx2(w0: &[u8], w1: &[u8], a: [&[Self::Act]; WIDE]) -> [[f32; WIDE]; 2] {
        let mut out = [[0f32; WIDE]; 2];
        for half in 0..WIDE / ACTS {
            let group: [&[Self::Act]; ACTS] = std::array::from_fn(|c| a[half * ACTS + c]);
            let y = unsafe { Self::dot2_acts_avx2(w0, w1, group) };
            for r in 0..2 {
                out[r][half * ACTS..][..ACTS].copy_from_slice(&y[r]);
            }
        }
        out
    }
    /// Unpacks a weight row once for all of a prompt's activation rows, where the kernel has such a form (false:
    /// its tiles unpack each block themselves).
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn unpack_avx2(_w: &[u8], _into: &mut avx2::Unpacked) -> bool {
        false
    }
    /// [`Kernel::dot2_wide_avx2`], the same bits, on rows [`Kernel::unpack_avx2`] unpacked into `u`.
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot2_wide_unpacked_avx2(
        w: [&[u8]; 2],
        _u: [&avx2::Unpacked; 2],
        a: [&[Self::Act]; WIDE],
    ) -> [[f32; WIDE]; 2] {
        unsafe { Self::dot2_wide_avx2(w[0], w[1], a) }
    }
}

/// Activation rows one tile of a batched product takes together.
#[cfg(target_arch = "x86_64")]
const ACTS: usize = 4;
/// Activation rows a prompt's tiles of the 32-value formats take together: each weight block unpacked once for
/// more of them (8 · 2 accumulators still fit the 16 registers; the offset formats, which carry a second sum per
/// pair, go one weight row at a time).
#[cfg(target_arch = "x86_64")]
const WIDE: usize = 8;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(
    WIDE == 2 * ACTS,
    "the unpacked tiles take a wide group as two of ACTS rows"
);

#[cfg(target_arch = "x86_64")]
use super::dot_avx2 as avx2;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use super::dot_simd128 as simd128;
use dot::KPath;

/// A 32-value block format: portable dot, and the interleaved AVX2 kernel for one or two rows.
/// `Name / NameV`: the second with the AVX-512 VNNI byte dot products (see `rows_vnni`).
macro_rules! kernel32 {
    ($name:ident / $vname:ident, $($rest:tt)*) => {
        kernel32!(@one $name, false, $($rest)*);
        kernel32!(@one $vname, true, $($rest)*);
    };
    (@one $name:ident, $vnni:literal, $act:ty, $kind:ident, $repacked:expr, |$w:ident, $a:ident| $portable:expr
        $(, unpacked: $unpack:ident => $unpacked_tile:ident)?) => {
        #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
        struct $name;
        impl Kernel for $name {
            type Act = $act;
            #[cfg(target_arch = "x86_64")]
            const VNNI: bool = $vnni;
            #[inline(always)]
            fn dot($w: &[u8], $a: &[$act]) -> f32 {
                $portable
            }
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            #[inline(always)]
            fn dot_simd128(w: &[u8], a: &[$act]) -> f32 {
                simd128::dot32::<{ simd128::$kind }, $act>(w, a, $repacked)
            }
            #[cfg(target_arch = "x86_64")]
            #[inline(always)]
            unsafe fn dot_avx2(w: &[u8], a: &[$act]) -> f32 {
                unsafe { avx2::dot32_rows::<{ avx2::$kind }, 1, $act, $vnni>([w], a, $repacked)[0] }
            }
            #[cfg(target_arch = "x86_64")]
            #[inline(always)]
            unsafe fn dot2_avx2(w0: &[u8], w1: &[u8], a: &[$act]) -> [f32; 2] {
                unsafe { avx2::dot32_rows::<{ avx2::$kind }, 2, $act, $vnni>([w0, w1], a, $repacked) }
            }
            #[cfg(target_arch = "x86_64")]
            #[inline(always)]
            unsafe fn dot2_acts_avx2(w0: &[u8], w1: &[u8], a: [&[$act]; ACTS]) -> [[f32; ACTS]; 2] {
                unsafe {
                    avx2::dot32_tile::<{ avx2::$kind }, 2, ACTS, $act, $vnni>([w0, w1], a, $repacked)
                }
            }
            #[cfg(target_arch = "x86_64")]
            #[inline(always)]
            unsafe fn dot2_wide_avx2(w0: &[u8], w1: &[u8], a: [&[$act]; WIDE]) -> [[f32; WIDE]; 2] {
                unsafe {
                    if matches!(avx2::$kind, avx2::Q4_1 | avx2::Q5_1) {
                        let [y0] =
                            avx2::dot32_tile::<{ avx2::$kind }, 1, WIDE, $act, $vnni>([w0], a, $repacked);
                        let [y1] =
                            avx2::dot32_tile::<{ avx2::$kind }, 1, WIDE, $act, $vnni>([w1], a, $repacked);
                        [y0, y1]
                    } else {
                        avx2::dot32_tile::<{ avx2::$kind }, 2, WIDE, $act, $vnni>([w0, w1], a, $repacked)
                    }
                }
            }
            $(
                #[cfg(target_arch = "x86_64")]
                #[inline(always)]
                unsafe fn unpack_avx2(w: &[u8], into: &mut avx2::Unpacked) -> bool {
                    unsafe { avx2::$unpack(w, into) };
                    true
                }
                #[cfg(target_arch = "x86_64")]
                #[inline(always)]
                unsafe fn dot2_wide_unpacked_avx2(
                    _w: [&[u8]; 2],
                    u: [&avx2::Unpacked; 2],
                    a: [&[$act]; WIDE],
                ) -> [[f32; WIDE]; 2] {
                    // Two rows by ACTS, twice: with the weights unpacked, a 2 × 8 tile's spilled accumulators cost
                    // more than the loads it shares (20% slower). Spelled out: a loop over the halves compiled to a
                    // slower tile.
                    let lo: [&[$act]; ACTS] = std::array::from_fn(|c| a[c]);
                    let hi: [&[$act]; ACTS] = std::array::from_fn(|c| a[ACTS + c]);
                    let (y0, y1) = unsafe {
                        (
                            avx2::$unpacked_tile::<2, ACTS, $vnni>(u, lo),
                            avx2::$unpacked_tile::<2, ACTS, $vnni>(u, hi),
                        )
                    };
                    std::array::from_fn(|r| {
                        std::array::from_fn(|c| if c < ACTS { y0[r][c] } else { y1[r][c - ACTS] })
                    })
                }
            )?
        }
    };
}

/// A format with its own float arithmetic: the portable dot, and the hand-written AVX2 and wasm SIMD128 kernels
/// where it has them.
macro_rules! kernel {
    ($name:ident, $act:ty, |$w:ident, $a:ident| $portable:expr $(, avx2: $avx2:expr)? $(, tile_avx2: $tile:path)?
        $(, row8_avx2: $row8:path)? $(, simd128: $simd128:expr)?) => {
        struct $name;
        impl Kernel for $name {
            type Act = $act;
            #[inline(always)]
            fn dot($w: &[u8], $a: &[$act]) -> f32 {
                $portable
            }
            $(
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                #[inline(always)]
                fn dot_simd128($w: &[u8], $a: &[$act]) -> f32 {
                    $simd128
                }
            )?
            #[cfg(target_arch = "x86_64")]
            #[inline(always)]
            unsafe fn dot_avx2($w: &[u8], $a: &[$act]) -> f32 {
                kernel!(@avx2 $portable $(, $avx2)?)
            }
            $(
                #[cfg(target_arch = "x86_64")]
                #[inline(always)]
                unsafe fn dot2_acts_avx2(w0: &[u8], w1: &[u8], a: [&[$act]; ACTS]) -> [[f32; ACTS]; 2] {
                    unsafe { $tile([w0, w1], a) }
                }
            )?
            $(
                #[cfg(target_arch = "x86_64")]
                #[inline(always)]
                unsafe fn dot2_wide_avx2(w0: &[u8], w1: &[u8], a: [&[$act]; WIDE]) -> [[f32; WIDE]; 2] {
                    unsafe { [$row8(w0, a), $row8(w1, a)] }
                }
            )?
        }
    };
    (@avx2 $portable:expr, $avx2:expr) => {
        unsafe { $avx2 }
    };
    // No hand-written AVX2: the portable code, compiled inside the AVX2 function, is what runs there.
    (@avx2 $portable:expr) => {
        $portable
    };
}

kernel32!(Q4_0 / Q4_0V, BlockQ8_0, Q4_0, false, |w, a| dot::dot_q4_0(
    w, a, false
));
kernel32!(Q4_0R / Q4_0RV, BlockQ8_0, Q4_0, true, |w, a| dot::dot_q4_0(
    w, a, true
));
kernel32!(Q4_1 / Q4_1V, BlockQ8_1, Q4_1, false, |w, a| dot::dot_q4_1(w, a));
kernel32!(Q5_0 / Q5_0V, BlockQ8_0, Q5_0, false, |w, a| dot::dot_q5_0(w, a),
    unpacked: unpack_q5_0 => q5_0_unpacked_tile);
kernel32!(Q5_1 / Q5_1V, BlockQ8_1, Q5_1, false, |w, a| dot::dot_q5_1(w, a));
kernel32!(Q8_0 / Q8_0V, BlockQ8_0, Q8_0, false, |w, a| dot::dot_q8_0(w, a));
kernel!(Q4KV, BlockQ8K, |w, a| dot::dot_q4_k(w, a, KPath::Vec),
    avx2: avx2::dot_q4_k(w, a, KPath::Vec), simd128: simd128::dot_q4_k(w, a, KPath::Vec));
kernel!(Q4KT, BlockQ8K, |w, a| dot::dot_q4_k(w, a, KPath::Tiled),
    avx2: avx2::dot_q4_k(w, a, KPath::Tiled), simd128: simd128::dot_q4_k(w, a, KPath::Tiled));
kernel!(Q4KR, BlockQ8K, |w, a| dot::dot_q4_k(w, a, KPath::Repacked),
    avx2: avx2::dot_q4_k(w, a, KPath::Repacked), simd128: simd128::dot_q4_k(w, a, KPath::Repacked));
kernel!(Q4KRG, BlockQ8K, |w, a| dot::dot_q4_k(w, a, KPath::RepackedGemm),
    avx2: avx2::dot_q4_k(w, a, KPath::RepackedGemm), tile_avx2: avx2::q4k_gemm_tile,
    row8_avx2: avx2::q4k_gemm_row8, simd128: simd128::dot_q4_k(w, a, KPath::RepackedGemm));
kernel!(Q5KV, BlockQ8K, |w, a| dot::dot_q5_k(w, a, KPath::Vec), simd128: simd128::dot_q5_k(w, a, KPath::Vec));
kernel!(Q5KT, BlockQ8K, |w, a| dot::dot_q5_k(w, a, KPath::Tiled), simd128: simd128::dot_q5_k(w, a, KPath::Tiled));
kernel!(Q6KV, BlockQ8K, |w, a| dot::dot_q6_k(w, a, KPath::Vec),
    avx2: avx2::dot_q6_k(w, a, KPath::Vec), simd128: simd128::dot_q6_k(w, a, KPath::Vec));
kernel!(Q6KT, BlockQ8K, |w, a| dot::dot_q6_k(w, a, KPath::Tiled),
    avx2: avx2::dot_q6_k(w, a, KPath::Tiled), tile_avx2: avx2::q6k_tiled_tile,
    row8_avx2: avx2::q6k_tiled_row8, simd128: simd128::dot_q6_k(w, a, KPath::Tiled));

/// `x · wᵀ` with kernel K, as the parts of `widths` weight rows each.
fn run<K: Kernel>(w: &QMatrix, x: &[f32], m: usize, simd: bool, widths: &[usize]) -> Vec<Vec<f32>> {
    let mut outs: Vec<Vec<f32>> = widths.iter().map(|&n| super::zeroed(m * n)).collect();
    if m == 0 || w.rows == 0 || w.cols == 0 {
        return outs;
    }
    let nb = w.cols / K::Act::VALUES;
    let row_bytes = w.row_bytes();
    with_quantized::<K::Act, _>(x, m, simd, |acts| {
        for_each_chunk(&mut outs, m, row_bytes, |j0, pieces| {
            let len = pieces[0].len();
            let rows_data = &w.data[j0 * row_bytes..(j0 + len) * row_bytes];
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: `simd` is only true when simd_available() found AVX2, FMA and F16C.
                unsafe {
                    match (K::VNNI, m >= WIDE) {
                        (false, true) => rows_avx2::<K, true>(rows_data, row_bytes, acts, nb, pieces),
                        (false, false) => rows_avx2::<K, false>(rows_data, row_bytes, acts, nb, pieces),
                        (true, true) => rows_vnni::<K, true>(rows_data, row_bytes, acts, nb, pieces),
                        (true, false) => rows_vnni::<K, false>(rows_data, row_bytes, acts, nb, pieces),
                    }
                };
                return;
            }
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            if simd {
                rows(rows_data, row_bytes, acts, nb, pieces, K::dot_simd128);
                return;
            }
            let _ = simd;
            rows(rows_data, row_bytes, acts, nb, pieces, K::dot);
        });
    });
    outs
}

/// Output rows per task: up to four tasks per thread, none much under `MIN_TASK_BYTES` of weights, and as many tasks
/// as a multiple of the thread count, so that tasks of equal size keep every thread busy to the end (a decoded
/// token's small products — 200 KB for SmolLM2's q — would otherwise leave one thread idle half the time).
fn chunk_rows(n: usize, m: usize, row_bytes: usize) -> usize {
    const MIN_TASK_BYTES: usize = 24 * 1024;
    let t = super::threads();
    // A prompt's product is long enough for finer tasks: with 4 per thread, the last one left a thread idle for
    // ~10% of the product.
    let most = if m >= 64 { 16 * t } else { 4 * t };
    let tasks = (n * row_bytes * m / MIN_TASK_BYTES).clamp(1, most);
    let tasks = if tasks > 1 { tasks.div_ceil(t) * t } else { 1 };
    // Even chunks: the AVX2 loop takes weight rows two at a time.
    (n.div_ceil(tasks).next_multiple_of(2)).clamp(1, n)
}

/// Splits each `[m, n]` output part by columns (weight rows) into chunks ([`chunk_rows`] of the part), and runs
/// `f(first_weight_row, pieces)` on each, in parallel where threads exist; `pieces[i]` is output row i's slice of
/// that chunk.
fn for_each_chunk(
    outs: &mut [Vec<f32>],
    m: usize,
    row_bytes: usize,
    f: impl Fn(usize, &mut [&mut [f32]]) + Sync,
) {
    if let ([out], 1) = (&mut *outs, m) {
        let chunk = chunk_rows(out.len(), 1, row_bytes);
        let pieces = out.chunks_mut(chunk).enumerate().collect();
        super::tasks::for_each_task(pieces, |(t, piece)| f(t * chunk, &mut [piece]));
        return;
    }
    let mut tasks: Vec<(usize, Vec<&mut [f32]>)> = Vec::new();
    let mut first = 0;
    for out in outs.iter_mut() {
        let n = out.len() / m;
        if n == 0 {
            continue;
        }
        let chunk = chunk_rows(n, m, row_bytes);
        let start = tasks.len();
        tasks.extend((0..n.div_ceil(chunk)).map(|t| (first + t * chunk, Vec::with_capacity(m))));
        for row in out.chunks_mut(n) {
            for (task, piece) in tasks[start..].iter_mut().zip(row.chunks_mut(chunk)) {
                task.1.push(piece);
            }
        }
        first += n;
    }
    // A prompt's tasks are long: rayon's own waits cost nothing beside them.
    #[cfg(threaded)]
    {
        use rayon::prelude::*;
        tasks
            .into_par_iter()
            .for_each(|(j0, mut pieces)| f(j0, &mut pieces));
    }
    #[cfg(not(threaded))]
    tasks
        .into_iter()
        .for_each(|(j0, mut pieces)| f(j0, &mut pieces));
}

/// `pieces[i][jj] = dot(weight row jj, activation row i)`; the weight row stays in L1 across activation rows.
/// `dot` is the kernel's portable dot product, or its wasm SIMD128 one.
fn rows<A>(
    w: &[u8],
    row_bytes: usize,
    acts: &[A],
    nb: usize,
    pieces: &mut [&mut [f32]],
    dot: impl Fn(&[u8], &[A]) -> f32,
) {
    for (jj, wrow) in w.chunks_exact(row_bytes).enumerate() {
        for (piece, act) in pieces.iter_mut().zip(acts.chunks_exact(nb)) {
            piece[jj] = dot(wrow, act);
        }
    }
}

/// How far ahead of the weight rows being multiplied `rows_avx2` asks for the coming ones. The hardware prefetchers
/// alone left a decoded token's products waiting on memory: Gemma 3's 178 MB output projection streamed at two
/// thirds of llama.cpp's rate (decode 47 → 63 tok/s on the benchmark machine with this, SmolLM2 88 → 98; 1–16 KiB
/// ahead all measured alike).
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 4096;

/// [`rows`] compiled for AVX2: hand-written kernels inline here, and portable ones are vectorised with AVX2. (The
/// loop is spelled out rather than shared through a closure, which would not get the target features.)
///
/// `PROMPT` (a batch of at least `WIDE` rows) compiles the wide tiles in: kept out of the one-row loop of a decoded
/// token, they cost it ~15% on Gemma's Q8_0 head (its code no longer laid out as tightly).
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline(never)]
unsafe fn rows_avx2<K: Kernel, const PROMPT: bool>(
    w: &[u8],
    row_bytes: usize,
    acts: &[K::Act],
    nb: usize,
    pieces: &mut [&mut [f32]],
) {
    unsafe { rows_simd::<K, PROMPT>(w, row_bytes, acts, nb, pieces) }
}

/// [`rows_avx2`] compiled with AVX-512 VNNI on 256-bit vectors too, for the kernels whose byte dot products use it
/// (`K::VNNI`): on Zen 4, Gemma-3-270M's decode +10% (its Q8_0 output rows) and its prompt's Q5_0 products
/// +10%, with the same bits.
/// # Safety
/// The CPU supports AVX2, FMA, F16C, AVX512-VNNI and AVX512-VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
#[inline(never)]
unsafe fn rows_vnni<K: Kernel, const PROMPT: bool>(
    w: &[u8],
    row_bytes: usize,
    acts: &[K::Act],
    nb: usize,
    pieces: &mut [&mut [f32]],
) {
    unsafe { rows_simd::<K, PROMPT>(w, row_bytes, acts, nb, pieces) }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn rows_simd<K: Kernel, const PROMPT: bool>(
    w: &[u8],
    row_bytes: usize,
    acts: &[K::Act],
    nb: usize,
    pieces: &mut [&mut [f32]],
) {
    // Whole groups of activation rows (a batch's sequences) share each unpacked weight block; the rest go alone.
    let act_rows: Vec<&[K::Act]> = acts.chunks_exact(nb).collect();
    let wide = if PROMPT {
        act_rows.len() - act_rows.len() % WIDE
    } else {
        0
    };
    let grouped = act_rows.len() - act_rows.len() % ACTS;
    let mut pair_unpacked: [avx2::Unpacked; 2] = Default::default();
    let mut pairs = w.chunks_exact(2 * row_bytes);
    let mut jj = 0;
    for pair in &mut pairs {
        super::ops::prefetch(w, jj * row_bytes + PREFETCH_AHEAD, 2 * row_bytes);
        let (w0, w1) = pair.split_at(row_bytes);
        let [u0, u1] = &mut pair_unpacked;
        let unpacked = wide > 0 && unsafe { K::unpack_avx2(w0, u0) && K::unpack_avx2(w1, u1) };
        for g in (0..wide).step_by(WIDE) {
            let group: &[&[K::Act]; WIDE] = act_rows[g..g + WIDE].try_into().expect("WIDE rows");
            let y = unsafe {
                if unpacked {
                    K::dot2_wide_unpacked_avx2([w0, w1], [u0, u1], *group)
                } else {
                    K::dot2_wide_avx2(w0, w1, *group)
                }
            };
            for (c, piece) in pieces[g..g + WIDE].iter_mut().enumerate() {
                piece[jj] = y[0][c];
                piece[jj + 1] = y[1][c];
            }
        }
        for g in (wide..grouped).step_by(ACTS) {
            let group: &[&[K::Act]; ACTS] = act_rows[g..g + ACTS].try_into().expect("ACTS rows");
            let y = unsafe { K::dot2_acts_avx2(w0, w1, *group) };
            for (c, piece) in pieces[g..g + ACTS].iter_mut().enumerate() {
                piece[jj] = y[0][c];
                piece[jj + 1] = y[1][c];
            }
        }
        for (piece, act) in pieces[grouped..].iter_mut().zip(&act_rows[grouped..]) {
            let [y0, y1] = unsafe { K::dot2_avx2(w0, w1, act) };
            piece[jj] = y0;
            piece[jj + 1] = y1;
        }
        jj += 2;
    }
    if !pairs.remainder().is_empty() {
        for (piece, act) in pieces.iter_mut().zip(acts.chunks_exact(nb)) {
            piece[jj] = unsafe { K::dot_avx2(pairs.remainder(), act) };
        }
    }
}
