//! Model file formats. Both readers produce the same description of a file: metadata plus a tensor index whose
//! offsets are absolute in the file, so tensors can be streamed one by one from a `ByteSource`.

pub mod gguf;
pub mod safetensors;

use crate::error::Format;
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

/// Checks that every tensor's bytes lie inside a file of `file_len` bytes, given each tensor's name and end (None
/// when the end overflows u64). A file cut short fails here, before any weight is read, saying how many bytes its
/// tensor index needs (where the furthest tensor ends), rather than halfway through the weights.
pub(crate) fn check_extents<'a>(
    format: Format,
    ends: impl IntoIterator<Item = (&'a str, Option<u64>)>,
    file_len: u64,
) -> crate::Result<()> {
    let furthest = ends
        .into_iter()
        .map(|(name, end)| (end.unwrap_or(u64::MAX), name))
        .max_by_key(|&(end, _)| end);
    match furthest {
        Some((needed, tensor)) if needed > file_len => Err(crate::Error::Incomplete {
            format,
            len: file_len,
            needed,
            tensor: tensor.to_string(),
        }),
        _ => Ok(()),
    }
}

/// What a file that is not a model looks like, from its first bytes ("an HTML page"), for telling a user what
/// they gave instead; None when nothing is recognised.
pub fn looks_like(head: &[u8]) -> Option<&'static str> {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (b"PK\x03\x04", "a zip archive"),
        (b"PK\x05\x06", "a zip archive"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
        (b"BZh", "a bzip2 archive"),
        (b"\x28\xb5\x2f\xfd", "a zstd archive"),
        (b"%PDF", "a PDF document"),
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"\x7fELF", "a program"),
    ];
    if let Some((_, what)) = SIGNATURES.iter().find(|(sig, _)| head.starts_with(sig)) {
        return Some(what);
    }
    // u64 LE header length, then the header's JSON.
    if head.len() > 8
        && head[8] == b'{'
        && u64::from_le_bytes(head[..8].try_into().ok()?) <= safetensors::MAX_HEADER_BYTES
    {
        return Some("a safetensors file (open it with its config.json and tokenizer.json, as a model folder)");
    }
    let text = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let text = &text[text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len())..];
    let starts = |prefix: &str| {
        text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    if [
        "<!doctype html",
        "<html",
        "<head",
        "<body",
        "<!--",
        "<meta",
        "<title",
    ]
    .iter()
    .any(|p| starts(p))
    {
        return Some("an HTML page");
    }
    if starts("<?xml") {
        return Some("an XML document");
    }
    if starts("version https://git-lfs") {
        return Some("a Git LFS pointer, not the file it points to");
    }
    if starts("{") || starts("[") {
        return Some("a JSON file");
    }
    // Text cut anywhere, even inside a character, is still text.
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    let printable = head.iter().all(|&b| b >= 0x20 || b"\t\n\r".contains(&b));
    (valid && printable && !text.is_empty()).then_some("a text file")
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

#[cfg(test)]
mod tests {
    use super::looks_like;

    #[test]
    fn tells_what_a_file_that_is_not_a_model_is() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (
                b"\xef\xbb\xbf\n  <!doctype HTML><html>",
                Some("an HTML page"),
            ),
            (b"<html><body>404</body></html>", Some("an HTML page")),
            (b"[1, 2]", Some("a JSON file")),
            (b"PK\x03\x04\x14\x00\x00\x00", Some("a zip archive")),
            (b"\x1f\x8b\x08\x00", Some("a gzip archive")),
            (
                b"version https://git-lfs.github.com/spec/v1\noid sha256:",
                Some("a Git LFS pointer, not the file it points to"),
            ),
            (b"Not Found", Some("a text file")),
            (b"\x00\x01\x02\x03\xff\xfe", None),
            (b"", None),
        ];
        for (head, what) in cases {
            assert_eq!(looks_like(head), *what, "{head:?}");
        }
        let mut safetensors = 2u64.to_le_bytes().to_vec();
        safetensors.extend_from_slice(b"{}");
        assert!(looks_like(&safetensors).is_some_and(|w| w.starts_with("a safetensors file")));
    }
}
