//! GGUF reader: header, metadata and tensor index, parsed from a prefix of the file so the tensor data never has to be
//! in memory. Every count, length and offset in the header is checked against the file's length before it is used.

use super::{check_extents, read_prefix_until, MetaValue, Metadata, Parsed, TensorInfo};
use crate::error::{Format, HEAD_BYTES};
use crate::quant::GgmlType;
use crate::source::ByteSource;
use crate::{Error, Result};
use std::collections::HashSet;

/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;

/// Real files never nest arrays; the limit keeps a crafted file from exhausting the stack.
const MAX_ARRAY_DEPTH: usize = 8;

/// Metadata values (array elements included) a header may hold. A value costs ~32 bytes in memory but can take one
/// byte in the file; the largest real vocabularies hold about 10^6 values.
const MAX_META_VALUES: u64 = 1 << 24;

/// The largest header (metadata + tensor index) accepted. Real headers are at most tens of MiB (big vocabularies).
pub const MAX_HEADER_BYTES: u64 = 256 << 20;

/// First prefix `read_gguf` reads; enough for most headers in one read.
const INITIAL_PREFIX: u64 = 1 << 20;

/// A parsed GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: Metadata,
    /// In the order of the file's tensor index.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section. With no tensors it may lie past the end of the file.
    pub data_offset: u64,
    pub alignment: u64,
}

impl GgufFile {
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// `general.architecture`, e.g. `llama`, `gemma3`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(MetaValue::as_str)
    }
}

/// Fails with [`Error::NotGguf`] when `head`, the first bytes of a file, do not start as a GGUF does. Fewer than four
/// bytes pass: a download checks its first bytes as they arrive, and the parser refuses a file that short.
pub fn check_magic(head: &[u8]) -> Result<()> {
    if head.len() >= 4 && &head[..4] != b"GGUF" {
        return Err(Error::NotGguf {
            head: head[..head.len().min(HEAD_BYTES)].to_vec(),
        });
    }
    Ok(())
}

/// Parses the header from `prefix`, the first bytes of a file of `file_len` bytes.
pub fn parse_header(prefix: &[u8], file_len: u64) -> Result<Parsed<GgufFile>> {
    // A prefix longer than the file claims is treated as that file: the claimed length wins.
    let buf = match usize::try_from(file_len) {
        Ok(n) if n < prefix.len() => &prefix[..n],
        _ => prefix,
    };
    match parse(&mut Reader {
        buf,
        pos: 0,
        file_len,
        values: 0,
    }) {
        Ok(file) => Ok(Parsed::Complete(file)),
        Err(Stop::More(n)) => Ok(Parsed::NeedMore(n)),
        Err(Stop::Fail(e)) => Err(e),
    }
}

/// Reads the header of a GGUF file from `src`, growing the prefix it reads until the header is complete.
pub async fn read_gguf<S: ByteSource>(src: &S) -> Result<GgufFile> {
    read_prefix_until(src, INITIAL_PREFIX, parse_header).await
}

fn malformed(detail: impl Into<String>) -> Stop {
    Stop::Fail(Error::Malformed {
        format: Format::Gguf,
        detail: detail.into(),
    })
}

/// Why parsing stopped before the end: the prefix ran out, or the file is bad.
enum Stop {
    More(u64),
    Fail(Error),
}

type Step<T> = std::result::Result<T, Stop>;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    file_len: u64,
    /// Metadata values read so far, against MAX_META_VALUES.
    values: u64,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Step<&'a [u8]> {
        let start = self.pos as u64;
        let truncated = || Error::Truncated {
            format: Format::Gguf,
            offset: start,
            needed: n,
            available: self.file_len,
        };
        let end = start
            .checked_add(n)
            .ok_or_else(|| Stop::Fail(truncated()))?;
        if end > self.file_len {
            return Err(Stop::Fail(truncated()));
        }
        if end > MAX_HEADER_BYTES {
            return Err(Stop::Fail(Error::Unsupported(format!(
                "GGUF header larger than {} MiB",
                MAX_HEADER_BYTES >> 20
            ))));
        }
        if end > self.buf.len() as u64 {
            return Err(Stop::More(end));
        }
        let bytes = &self.buf[self.pos..end as usize];
        self.pos = end as usize;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let bytes = self.take(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self) -> Step<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Step<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self, what: &str) -> Step<String> {
        let len = self.u64()?;
        let start = self.pos;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| malformed(format!("{what} at offset {start} is not UTF-8: {e}")))
    }

    /// Bytes of the file after the cursor (not only of the prefix).
    fn file_left(&self) -> u64 {
        self.file_len.saturating_sub(self.pos as u64)
    }

    /// Rejects a count of items that could not fit in the rest of the file, before anything is sized by it.
    fn check_count(&self, count: u64, min_item_bytes: u64, what: &str) -> Step<()> {
        match count.checked_mul(min_item_bytes) {
            Some(bytes) if bytes <= self.file_left() => Ok(()),
            _ => Err(malformed(format!(
                "{what} {count} at offset {} cannot fit in the {} bytes left in the file",
                self.pos,
                self.file_left()
            ))),
        }
    }

    /// A capacity for `count` items that the bytes present in the prefix could actually hold.
    fn capacity(&self, count: u64, min_item_bytes: u64) -> usize {
        let in_prefix = (self.buf.len() - self.pos) as u64 / min_item_bytes.max(1);
        count.min(in_prefix) as usize
    }

    fn count_values(&mut self, n: u64) -> Step<()> {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_META_VALUES {
            return Err(Stop::Fail(Error::Unsupported(format!(
                "GGUF metadata with more than {MAX_META_VALUES} values"
            ))));
        }
        Ok(())
    }

    fn value(&mut self, ty: u32, depth: usize) -> Step<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>()?[0]),
            1 => MetaValue::I8(self.array::<1>()?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array()?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array()?)),
            4 => MetaValue::U32(self.u32()?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array()?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array()?)),
            7 => MetaValue::Bool(self.array::<1>()?[0] != 0),
            8 => MetaValue::String(self.string("string value")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(malformed(format!(
                        "arrays nested deeper than {MAX_ARRAY_DEPTH} at offset {}",
                        self.pos
                    )));
                }
                let elem_ty = self.u32()?;
                let count = self.u64()?;
                let min =
                    min_value_bytes(elem_ty).ok_or_else(|| unknown_type(elem_ty, self.pos))?;
                self.check_count(count, min, "array length")?;
                self.count_values(count)?;
                let mut items = Vec::with_capacity(self.capacity(count, min));
                for _ in 0..count {
                    items.push(self.value(elem_ty, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64()?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array()?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(unknown_type(other, self.pos)),
        })
    }
}

fn unknown_type(ty: u32, pos: usize) -> Stop {
    malformed(format!(
        "unknown metadata value type {ty} before offset {pos}"
    ))
}

/// The fewest bytes a value of type `ty` takes in the file, or None for an unknown type.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,     // the length of an empty string
        9 => 4 + 8, // element type and count of an empty array
        10..=12 => 8,
        _ => return None,
    })
}

/// A tensor index entry before the data section's start is known.
struct RawTensor {
    name: String,
    dtype: GgmlType,
    shape: Vec<usize>,
    rel_offset: u64,
    len: u64,
}

fn parse(r: &mut Reader) -> Step<GgufFile> {
    let head = &r.buf[..r.buf.len().min(HEAD_BYTES)];
    r.array::<4>()?;
    check_magic(head).map_err(Stop::Fail)?;
    let version = r.u32()?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(Stop::Fail(Error::Unsupported(
                "GGUF version 1 (convert the model again)".into(),
            )))
        }
        v if matches!(v.swap_bytes(), 2 | 3) => {
            return Err(Stop::Fail(Error::Unsupported("big-endian GGUF".into())));
        }
        v => return Err(Stop::Fail(Error::Unsupported(format!("GGUF version {v}")))),
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    // Smallest entries: a key with an empty name and a u8 value; a tensor with an empty name and no dims.
    r.check_count(kv_count, 8 + 4 + 1, "metadata count")?;
    r.check_count(tensor_count, 8 + 4 + 4 + 8, "tensor count")?;

    let mut metadata = Metadata::new();
    for _ in 0..kv_count {
        let key = r.string("metadata key")?;
        let ty = r.u32()?;
        r.count_values(1)?;
        let value = r.value(ty, 0)?;
        if metadata.contains_key(&key) {
            return Err(malformed(format!("duplicate metadata key `{key}`")));
        }
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            _ => {
                return Err(malformed(format!(
                    "general.alignment {v:?} is not a power of two"
                )))
            }
        },
    };

    let mut raw = Vec::with_capacity(r.capacity(tensor_count, 24));
    let mut names = HashSet::new();
    for _ in 0..tensor_count {
        let t = tensor_entry(r, alignment)?;
        if !names.insert(t.name.clone()) {
            return Err(malformed(format!("duplicate tensor `{}`", t.name)));
        }
        raw.push(t);
    }

    let header_end = r.pos as u64;
    let data_offset = header_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| {
            malformed(format!(
                "alignment {alignment} puts the data section past 2^64"
            ))
        })?;

    let ends = raw.iter().map(|t| {
        let end = data_offset
            .checked_add(t.rel_offset)
            .and_then(|o| o.checked_add(t.len));
        (t.name.as_str(), end)
    });
    check_extents(Format::Gguf, ends, r.file_len).map_err(Stop::Fail)?;
    let tensors: Vec<TensorInfo> = raw
        .into_iter()
        .map(|t| TensorInfo {
            name: t.name,
            dtype: t.dtype,
            shape: t.shape,
            // Within the file, as just checked.
            offset: data_offset.saturating_add(t.rel_offset),
            len: t.len,
            shard: 0,
        })
        .collect();
    check_overlaps(&tensors)?;

    Ok(GgufFile {
        version,
        metadata,
        tensors,
        data_offset,
        alignment,
    })
}

fn tensor_entry(r: &mut Reader, alignment: u64) -> Step<RawTensor> {
    let name = r.string("tensor name")?;
    let n_dims = r.u32()?;
    if n_dims > MAX_DIMS {
        return Err(malformed(format!(
            "tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})"
        )));
    }
    let mut dims = [0u64; MAX_DIMS as usize];
    for d in dims.iter_mut().take(n_dims as usize) {
        *d = r.u64()?;
    }
    let dims = &dims[..n_dims as usize];
    let type_id = r.u32()?;
    let rel_offset = r.u64()?;
    let bad = |why: String| malformed(format!("tensor `{name}` {dims:?}: {why}"));

    let dtype = GgmlType::from_id(type_id).map_err(|_| {
        Stop::Fail(Error::Unsupported(format!(
            "GGUF tensor `{name}` has ggml type {type_id}"
        )))
    })?;
    if dims.contains(&0) {
        return Err(bad("a dimension is zero".into()));
    }
    let elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| bad("element count overflows".into()))?;
    let row = dims.first().copied().unwrap_or(1);
    if row % dtype.block_size() as u64 != 0 {
        return Err(bad(format!(
            "rows of {row} are not whole {} blocks of {}",
            dtype.name(),
            dtype.block_size()
        )));
    }
    let len = dtype
        .byte_len(elements)
        .ok_or_else(|| bad("byte length overflows".into()))?;
    if rel_offset % alignment != 0 {
        return Err(bad(format!(
            "offset {rel_offset} is not a multiple of the alignment {alignment}"
        )));
    }
    // Every dim fits usize because their product does.
    let shape = dims.iter().rev().map(|&d| d as usize).collect();
    Ok(RawTensor {
        name,
        dtype,
        shape,
        rel_offset,
        len,
    })
}

fn check_overlaps(tensors: &[TensorInfo]) -> Step<()> {
    let mut spans: Vec<(u64, u64, &str)> = tensors
        .iter()
        .map(|t| (t.offset, t.offset + t.len, t.name.as_str()))
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        let ((_, end_a, a), (start_b, _, b)) = (pair[0], pair[1]);
        if start_b < end_a {
            return Err(malformed(format!("tensors `{a}` and `{b}` overlap")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes GGUF bytes by hand, independently of the reader.
    #[derive(Default)]
    struct Writer {
        out: Vec<u8>,
    }

    impl Writer {
        fn u32(&mut self, v: u32) -> &mut Self {
            self.out.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.out.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn str(&mut self, s: &str) -> &mut Self {
            self.u64(s.len() as u64);
            self.out.extend_from_slice(s.as_bytes());
            self
        }
        fn header(&mut self, version: u32, tensors: u64, kvs: u64) -> &mut Self {
            self.out.extend_from_slice(b"GGUF");
            self.u32(version).u64(tensors).u64(kvs)
        }
        fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
            self.str(k).u32(8).str(v)
        }
        fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
            self.str(k).u32(4).u32(v)
        }
        /// dims innermost first, as GGUF stores them.
        fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
            self.str(name).u32(dims.len() as u32);
            for &d in dims {
                self.u64(d);
            }
            self.u32(ty).u64(offset)
        }
        fn pad_to(&mut self, align: usize) -> &mut Self {
            self.out.resize(self.out.len().next_multiple_of(align), 0);
            self
        }
        fn zeros(&mut self, n: usize) -> &mut Self {
            self.out.resize(self.out.len() + n, 0);
            self
        }
    }

    fn complete(bytes: &[u8]) -> Result<GgufFile> {
        match parse_header(bytes, bytes.len() as u64)? {
            Parsed::Complete(f) => Ok(f),
            Parsed::NeedMore(n) => panic!("whole file given, yet asked for {n} bytes"),
        }
    }

    /// Two tensors: an F32 [2, 3] (dims [3, 2]) and a Q4_0 [1, 64].
    fn two_tensor_file() -> Vec<u8> {
        let mut w = Writer::default();
        w.header(3, 2, 2)
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 1);
        w.tensor("a", &[3, 2], 0, 0).tensor("b", &[64, 1], 2, 32);
        w.pad_to(32).zeros(32 + 36);
        w.out
    }

    #[test]
    fn reads_tensor_index() {
        let bytes = two_tensor_file();
        let f = complete(&bytes).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.alignment, 32);
        assert_eq!(f.architecture(), Some("llama"));
        assert_eq!(f.get("llama.block_count"), Some(&MetaValue::U32(1)));
        assert_eq!(f.data_offset % 32, 0);
        assert_eq!(f.data_offset, bytes.len() as u64 - 68);
        let a = f.tensor("a").unwrap();
        assert_eq!(
            (a.dtype, a.shape.clone(), a.offset, a.len),
            (GgmlType::F32, vec![2, 3], f.data_offset, 24)
        );
        let b = f.tensor("b").unwrap();
        assert_eq!(
            (b.dtype, b.shape.clone(), b.offset, b.len),
            (GgmlType::Q4_0, vec![1, 64], f.data_offset + 32, 36)
        );
        assert!(f.tensor("c").is_none());
    }

    #[test]
    fn every_value_type() {
        let mut w = Writer::default();
        w.header(2, 0, 14);
        w.str("u8").u32(0).out.push(200);
        w.str("i8").u32(1).out.push(0xff);
        w.str("u16")
            .u32(2)
            .out
            .extend_from_slice(&513u16.to_le_bytes());
        w.str("i16")
            .u32(3)
            .out
            .extend_from_slice(&(-2i16).to_le_bytes());
        w.kv_u32("u32", 70000);
        w.str("i32")
            .u32(5)
            .out
            .extend_from_slice(&(-3i32).to_le_bytes());
        w.str("f32")
            .u32(6)
            .out
            .extend_from_slice(&1.5f32.to_le_bytes());
        w.str("bool").u32(7).out.push(1);
        w.kv_str("str", "héllo");
        w.str("arr").u32(9).u32(8).u64(2).str("x").str("");
        w.str("u64").u32(10).u64(1 << 40);
        w.str("i64")
            .u32(11)
            .out
            .extend_from_slice(&(-5i64).to_le_bytes());
        w.str("f64")
            .u32(12)
            .out
            .extend_from_slice(&0.25f64.to_le_bytes());
        // [[1, 2], []] of i32
        w.str("nested")
            .u32(9)
            .u32(9)
            .u64(2)
            .u32(5)
            .u64(2)
            .u32(1)
            .u32(2)
            .u32(5)
            .u64(0);
        let f = complete(&w.out).unwrap();
        use MetaValue::*;
        let expect = [
            ("u8", U8(200)),
            ("i8", I8(-1)),
            ("u16", U16(513)),
            ("i16", I16(-2)),
            ("u32", U32(70000)),
            ("i32", I32(-3)),
            ("f32", F32(1.5)),
            ("bool", Bool(true)),
            ("str", String("héllo".into())),
            ("arr", Array(vec![String("x".into()), String("".into())])),
            ("u64", U64(1 << 40)),
            ("i64", I64(-5)),
            ("f64", F64(0.25)),
            (
                "nested",
                Array(vec![Array(vec![I32(1), I32(2)]), Array(vec![])]),
            ),
        ];
        assert_eq!(f.metadata.len(), expect.len());
        for (k, v) in expect {
            assert_eq!(f.get(k), Some(&v), "{k}");
        }
        assert_eq!(f.version, 2);
        assert!(f.tensors.is_empty());
    }

    #[test]
    fn custom_alignment() {
        let mut w = Writer::default();
        w.header(3, 1, 1)
            .kv_u32("general.alignment", 64)
            .tensor("t", &[4], 0, 0)
            .pad_to(64)
            .zeros(16);
        let f = complete(&w.out).unwrap();
        assert_eq!(f.alignment, 64);
        assert_eq!(f.data_offset % 64, 0);
        assert_eq!(f.tensors[0].offset, f.data_offset);

        for bad in [0, 48] {
            let mut w = Writer::default();
            w.header(3, 0, 1).kv_u32("general.alignment", bad);
            assert!(
                matches!(complete(&w.out), Err(Error::Malformed { .. })),
                "alignment {bad}"
            );
        }
    }

    #[test]
    fn prefix_asks_for_more() {
        let bytes = two_tensor_file();
        // The unpadded header: everything before the data section's alignment padding.
        let header_len: usize =
            4 + 4 + 8 + 8 + (8 + 20 + 4 + 8 + 5) + (8 + 17 + 4 + 4) + 2 * (8 + 1 + 4 + 16 + 4 + 8);
        assert_eq!(bytes.len() - 68, header_len.next_multiple_of(32));
        for cut in 0..header_len {
            match parse_header(&bytes[..cut], bytes.len() as u64).unwrap() {
                Parsed::NeedMore(n) => assert!(
                    n as usize > cut && n as usize <= header_len,
                    "cut {cut}: {n}"
                ),
                Parsed::Complete(_) => panic!("complete from {cut} bytes"),
            }
            // The same bytes as a whole file are a truncated file (or one whose counts cannot fit in it).
            let r = complete(&bytes[..cut]);
            assert!(
                matches!(r, Err(Error::Truncated { .. } | Error::Malformed { .. })),
                "cut {cut}: {r:?}"
            );
        }
        // The header alone parses; the tensor data must still fit in the file.
        assert!(matches!(
            parse_header(&bytes[..header_len], bytes.len() as u64),
            Ok(Parsed::Complete(_))
        ));
        assert!(matches!(
            complete(&bytes[..bytes.len() - 1]),
            Err(Error::Incomplete {
                format: Format::Gguf,
                ..
            })
        ));
    }

    #[test]
    fn reads_through_source() {
        let bytes = two_tensor_file();
        let src = crate::source::MemorySource {
            name: "t.gguf".into(),
            bytes: bytes.clone(),
        };
        let f = futures::executor::block_on(read_gguf(&src)).unwrap();
        assert_eq!(f, complete(&bytes).unwrap());
    }

    #[test]
    fn grows_the_prefix_past_the_first_read() {
        // A 3 MiB string forces reads beyond the first 1 MiB.
        let mut w = Writer::default();
        let big = "x".repeat(3 << 20);
        w.header(3, 1, 1)
            .kv_str("big", &big)
            .tensor("t", &[8], 0, 0)
            .pad_to(32)
            .zeros(32);
        let src = crate::source::MemorySource {
            name: "big.gguf".into(),
            bytes: w.out,
        };
        let f = futures::executor::block_on(read_gguf(&src)).unwrap();
        assert_eq!(
            f.get("big").and_then(MetaValue::as_str).map(str::len),
            Some(3 << 20)
        );
        assert_eq!(f.tensors[0].shape, vec![8]);
    }

    fn assert_malformed(bytes: &[u8], what: &str) {
        match complete(bytes) {
            Err(Error::Malformed {
                format: Format::Gguf,
                ..
            }) => {}
            other => panic!("{what}: expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let mut w = Writer::default();
        w.out.extend_from_slice(b"GGUX");
        w.u32(3).u64(0).u64(0);
        assert!(matches!(complete(&w.out), Err(Error::NotGguf { head }) if head == w.out));

        let mut w = Writer::default();
        w.header(1, 0, 0);
        assert!(matches!(complete(&w.out), Err(Error::Unsupported(_))));
        let mut w = Writer::default();
        w.header(3u32.swap_bytes(), 0, 0);
        assert!(matches!(complete(&w.out), Err(Error::Unsupported(m)) if m.contains("big-endian")));

        let mut w = Writer::default();
        w.header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2);
        assert_malformed(&w.out, "duplicate key");

        let mut w = Writer::default();
        w.header(3, 0, 1).str("k").u32(13).u32(0);
        assert_malformed(&w.out, "unknown value type");

        let mut w = Writer::default();
        w.header(3, 0, 1).str("k").u32(9).u32(13).u64(0);
        assert_malformed(&w.out, "unknown array element type");

        let mut w = Writer::default();
        w.header(3, 0, 1).str("k").u32(8).u64(2);
        w.out.extend_from_slice(&[0xff, 0xfe]);
        assert_malformed(&w.out, "invalid UTF-8");

        // Arrays nested past the limit.
        let mut w = Writer::default();
        w.header(3, 0, 1).str("k").u32(9);
        for _ in 0..MAX_ARRAY_DEPTH {
            w.u32(9).u64(1);
        }
        w.u32(0).u64(0);
        assert_malformed(&w.out, "deep nesting");
    }

    #[test]
    fn rejects_absurd_counts_before_allocating() {
        for (tensors, kvs) in [(u64::MAX, 0), (0, u64::MAX), (1 << 40, 0), (0, 1 << 40)] {
            let mut w = Writer::default();
            w.header(3, tensors, kvs);
            assert_malformed(&w.out, "count");
            // Even with only a prefix given, the file length bounds the count.
            let r = parse_header(&w.out, 1 << 30);
            assert!(
                matches!(r, Err(Error::Malformed { .. })),
                "{tensors} {kvs}: {r:?}"
            );
        }
        let mut w = Writer::default();
        w.header(3, 0, 1).str("k").u32(9).u32(10).u64(u64::MAX / 4);
        assert_malformed(&w.out, "array length");
        let mut w = Writer::default();
        w.header(3, 0, 1).str("k").u32(8).u64(1 << 40);
        assert!(matches!(complete(&w.out), Err(Error::Truncated { .. })));
        // A string the file could hold but no sane header would.
        assert!(matches!(
            parse_header(&w.out, u64::MAX),
            Err(Error::Unsupported(_))
        ));
    }

    fn one_tensor(dims: &[u64], ty: u32, offset: u64, data: usize) -> Vec<u8> {
        let mut w = Writer::default();
        w.header(3, 1, 0)
            .tensor("t", dims, ty, offset)
            .pad_to(32)
            .zeros(data);
        w.out
    }

    #[test]
    fn rejects_bad_tensors() {
        assert_malformed(&one_tensor(&[1, 1, 1, 1, 1], 0, 0, 4), "5 dims");
        assert_malformed(&one_tensor(&[4, 0], 0, 0, 16), "zero dim");
        assert_malformed(
            &one_tensor(&[1 << 32, 1 << 32], 0, 0, 16),
            "element overflow",
        );
        assert_malformed(&one_tensor(&[1 << 62, 2], 0, 0, 16), "byte overflow");
        assert_malformed(&one_tensor(&[48, 2], 2, 0, 1024), "row not whole blocks");
        assert_malformed(&one_tensor(&[4], 0, 16, 64), "unaligned offset");
        assert!(matches!(
            complete(&one_tensor(&[4], 99, 0, 64)),
            Err(Error::Unsupported(_))
        ));
        let short = one_tensor(&[4], 0, 0, 15);
        match complete(&short) {
            Err(Error::Incomplete {
                len,
                needed,
                tensor,
                ..
            }) => {
                assert_eq!(
                    (len, needed, tensor.as_str()),
                    (short.len() as u64, short.len() as u64 + 1, "t")
                );
            }
            other => panic!("a file one byte short: {other:?}"),
        }
        assert!(matches!(
            complete(&one_tensor(&[4], 0, u64::MAX - 31, 16)),
            Err(Error::Incomplete {
                needed: u64::MAX,
                ..
            })
        ));
        // A scalar is fine.
        let f = complete(&one_tensor(&[], 0, 0, 4)).unwrap();
        assert_eq!((f.tensors[0].shape.len(), f.tensors[0].len), (0, 4));

        let mut w = Writer::default();
        w.header(3, 2, 0)
            .tensor("t", &[8], 0, 0)
            .tensor("t", &[8], 0, 32)
            .pad_to(32)
            .zeros(64);
        assert_malformed(&w.out, "duplicate tensor");

        let mut w = Writer::default();
        w.header(3, 2, 0)
            .tensor("a", &[16], 0, 0)
            .tensor("b", &[8], 0, 32)
            .pad_to(32)
            .zeros(64);
        assert_malformed(&w.out, "overlap");
    }

    #[test]
    fn vocab_only_file_may_end_before_the_data_section() {
        // llama.cpp's vocab files end right after the header, short of the aligned data offset.
        let mut w = Writer::default();
        w.header(3, 0, 1).kv_str("general.architecture", "llama");
        let f = complete(&w.out).unwrap();
        assert!(f.data_offset > w.out.len() as u64);
    }
}
