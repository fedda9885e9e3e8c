//! ggml weight types: block geometry, and CPU dequantisation (the reference the GPU kernels are tested against).

use crate::{Error, Result};

/// ggml tensor types, numbered as in GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
    BF16,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Result<Self> {
        Ok(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::BF16,
            other => return Err(Error::Unsupported(format!("ggml tensor type {other}"))),
        })
    }

    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::BF16 => 30,
        }
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => 32,
            Self::Q4K | Self::Q5K | Self::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::BF16 => "BF16",
        }
    }

    /// Bytes taken by `elements` values, or None when they do not fill whole blocks (or overflow).
    pub fn byte_len(self, elements: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !elements.is_multiple_of(bs) {
            return None;
        }
        (elements / bs).checked_mul(self.type_size() as u64)
    }
}

/// Dequantise whole blocks of `ty` into `out`; `bytes` must be exactly `ty.byte_len(out.len())` long.
///
/// Block layouts and arithmetic follow ggml-quants.c (`dequantize_row_*`) operation for operation, so the results
/// are bit-identical to ggml's and gguf-py's reference dequantisers.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_len(ty, bytes.len(), out.len())?;
    match ty {
        GgmlType::F32 => {
            for (y, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (y, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *y = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (y, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *y = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => for_blocks(ty, bytes, out, dequant_q4_0),
        GgmlType::Q4_1 => for_blocks(ty, bytes, out, dequant_q4_1),
        GgmlType::Q5_0 => for_blocks(ty, bytes, out, dequant_q5_0),
        GgmlType::Q5_1 => for_blocks(ty, bytes, out, dequant_q5_1),
        GgmlType::Q8_0 => for_blocks(ty, bytes, out, dequant_q8_0),
        GgmlType::Q4K => for_blocks(ty, bytes, out, dequant_q4_k),
        GgmlType::Q5K => for_blocks(ty, bytes, out, dequant_q5_k),
        GgmlType::Q6K => for_blocks(ty, bytes, out, dequant_q6_k),
    }
    Ok(())
}

/// [`dequantize`] into a new vector of `elements` values. The length is checked against `bytes` before anything is
/// allocated, so an untrusted element count cannot cause a huge allocation.
pub fn dequantize_to_vec(ty: GgmlType, bytes: &[u8], elements: usize) -> Result<Vec<f32>> {
    check_len(ty, bytes.len(), elements)?;
    let mut out = vec![0f32; elements];
    dequantize(ty, bytes, &mut out)?;
    Ok(out)
}

/// Quantise to Q8_0 exactly as ggml's `quantize_row_q8_0_ref` (and gguf-py) do: per block of 32,
/// d = amax / 127 (stored as f16), q = round(x * (1 / d)) with ties away from zero, q = 0 when d = 0.
/// The reciprocal is computed in f32 and multiplied, not divided, because that is what makes the bytes identical.
pub fn quantize_q8_0(values: &[f32]) -> Result<Vec<u8>> {
    const QK: usize = 32;
    if !values.len().is_multiple_of(QK) {
        return Err(Error::InvalidArgument(format!(
            "Q8_0 quantisation needs a multiple of {QK} values, got {}",
            values.len()
        )));
    }
    let mut out = Vec::with_capacity(values.len() / QK * GgmlType::Q8_0.type_size());
    for block in values.chunks_exact(QK) {
        let amax = block.iter().fold(0f32, |m, &x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        // `as i8` saturates (and maps NaN to 0), so a non-finite input cannot wrap around.
        out.extend(block.iter().map(|&x| (x * id).round() as i8 as u8));
    }
    Ok(out)
}

fn check_len(ty: GgmlType, bytes: usize, elements: usize) -> Result<()> {
    match ty.byte_len(elements as u64) {
        Some(expected) if expected == bytes as u64 => Ok(()),
        Some(expected) => Err(Error::InvalidArgument(format!(
            "{} data for {elements} values must be {expected} bytes, got {bytes}",
            ty.name()
        ))),
        None => Err(Error::InvalidArgument(format!(
            "{elements} values do not fill whole {} blocks of {}",
            ty.name(),
            ty.block_size()
        ))),
    }
}

/// Runs `f` over each (block bytes, block output) pair; lengths were checked by the caller, so every block is whole.
fn for_blocks(ty: GgmlType, bytes: &[u8], out: &mut [f32], f: fn(&[u8], &mut [f32])) {
    for (block, y) in bytes
        .chunks_exact(ty.type_size())
        .zip(out.chunks_exact_mut(ty.block_size()))
    {
        f(block, y);
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn dequant_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 15) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

fn dequant_q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 15) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

fn dequant_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32_at(b, 2);
    let qs = &b[6..22];
    for j in 0..16 {
        let hi0 = ((qh >> j) << 4) as u8 & 0x10;
        let hi1 = (qh >> (j + 12)) as u8 & 0x10;
        y[j] = (((qs[j] & 15) | hi0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) | hi1) as i32 - 16) as f32 * d;
    }
}

fn dequant_q5_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32_at(b, 4);
    let qs = &b[8..24];
    for j in 0..16 {
        let hi0 = ((qh >> j) << 4) as u8 & 0x10;
        let hi1 = (qh >> (j + 12)) as u8 & 0x10;
        y[j] = ((qs[j] & 15) | hi0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) | hi1) as f32 * d + m;
    }
}

fn dequant_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = q as i8 as f32 * d;
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) packed into a K-quant's 12 scale bytes (ggml's get_scale_min_k4).
fn scale_min_k4(j: usize, s: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    };
    (sc as f32, m as f32)
}

fn dequant_q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for c in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * sc1, dmin * m1);
        let (d2, m2) = (d * sc2, dmin * m2);
        let q = &qs[32 * c..32 * c + 32];
        let y = &mut y[64 * c..64 * c + 64];
        for l in 0..32 {
            y[l] = d1 * (q[l] & 15) as f32 - m1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

fn dequant_q5_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for c in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * sc1, dmin * m1);
        let (d2, m2) = (d * sc2, dmin * m2);
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        let q = &qs[32 * c..32 * c + 32];
        let y = &mut y[64 * c..64 * c + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((q[l] & 15) + h1) as f32 - m1;
            y[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
        }
    }
}

fn dequant_q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let y = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * sc[is] as i8 as f32 * q1 as f32;
            y[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
            y[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
            y[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
        }
    }
}
