//! Model file formats. Both readers produce the same description of a file: metadata plus a tensor index whose
//! offsets are absolute in the file, so tensors can be streamed one by one from a `ByteSource`.

pub mod gguf;
pub mod safetensors;

use crate::quant::GgmlType;
use std::collections::BTreeMap;

/// A GGUF metadata value (config.json values are converted to these too).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// Any integer type that fits in u64.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v as i64),
            MetaValue::I16(v) => Some(v as i64),
            MetaValue::I32(v) => Some(v as i64),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// Any numeric type as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

pub type Metadata = BTreeMap<String, MetaValue>;

/// One tensor of a model file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The name as stored (GGUF: `blk.0.attn_q.weight`; safetensors: `model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    pub dtype: GgmlType,
    /// Outermost dimension first, as PyTorch writes it: a Linear weight is [out_features, in_features].
    /// (GGUF stores dims innermost first; the reader reverses them.)
    pub shape: Vec<usize>,
    /// Absolute byte offset in the file (or shard).
    pub offset: u64,
    /// Byte length.
    pub len: u64,
    /// Index of the shard holding it (always 0 for single-file models).
    pub shard: usize,
}

impl TensorInfo {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The outcome of parsing a header from a prefix of a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<T> {
    Complete(T),
    /// The header continues past the prefix: parse again with a prefix of at least this many bytes.
    NeedMore(u64),
}

/// Reads a growing prefix of `src` until `parse` completes. The prefix starts at `initial` bytes and at least doubles
/// each round, so a header of n bytes costs O(log n) reads and O(n) bytes read in all.
pub(crate) async fn read_prefix_until<S, T>(
    src: &S,
    initial: u64,
    mut parse: impl FnMut(&[u8], u64) -> crate::Result<Parsed<T>>,
) -> crate::Result<T>
where
    S: crate::source::ByteSource,
{
    let file_len = src.len();
    let mut buf: Vec<u8> = Vec::new();
    let mut want = initial.min(file_len);
    loop {
        let have = buf.len() as u64;
        if want > have {
            let extra = usize::try_from(want - have).map_err(|_| {
                crate::Error::Unsupported(format!("a header of {want} bytes on this platform"))
            })?;
            buf.extend_from_slice(&src.read_at(have, extra).await?);
        }
        match parse(&buf, file_len)? {
            Parsed::Complete(v) => return Ok(v),
            Parsed::NeedMore(n) => {
                // Parsers only ask for more when it exists; anything else would loop forever.
                if n <= buf.len() as u64 || n > file_len {
                    return Err(crate::Error::InvalidArgument(format!(
                        "header parser asked for {n} bytes of {} with {} already read",
                        src.name(),
                        buf.len()
                    )));
                }
                want = n.max(want.saturating_mul(2)).min(file_len);
            }
        }
    }
}
