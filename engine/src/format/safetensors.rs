//! safetensors reader: the JSON header of one file (or shard), and the shard index of a multi-file model.
//! Layout: u64 LE header length N, N bytes of JSON, then the data; `data_offsets` are relative to byte 8 + N.

use super::{check_extents, read_prefix_until, Parsed, TensorInfo};
use crate::error::Format;
use crate::quant::GgmlType;
use crate::source::ByteSource;
use crate::{Error, Result};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The largest JSON header accepted (the limit the reference `safetensors` crate applies).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// First prefix `read_safetensors` reads; most headers fit.
const INITIAL_PREFIX: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct SafetensorsFile {
    /// In file order (by offset).
    pub tensors: Vec<TensorInfo>,
    /// The header's `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// `model.safetensors.index.json` of a sharded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardIndex {
    /// Shard file names, in the order the weight map first names them.
    pub shards: Vec<String>,
    /// Tensor name → index into `shards`.
    pub tensor_shard: BTreeMap<String, usize>,
}

fn malformed(detail: impl Into<String>) -> Error {
    Error::Malformed {
        format: Format::Safetensors,
        detail: detail.into(),
    }
}

/// Parses the header from `prefix`, the first bytes of a file of `file_len` bytes; tensors are tagged with `shard`.
pub fn parse_header(prefix: &[u8], file_len: u64, shard: usize) -> Result<Parsed<SafetensorsFile>> {
    let need = |needed: u64| -> Result<bool> {
        if needed > file_len {
            return Err(Error::Truncated {
                format: Format::Safetensors,
                offset: 0,
                needed,
                available: file_len,
            });
        }
        Ok(needed > prefix.len() as u64)
    };
    if need(8)? {
        return Ok(Parsed::NeedMore(8));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&prefix[..8]);
    let n = u64::from_le_bytes(len_bytes);
    if n > MAX_HEADER_BYTES {
        return Err(malformed(format!(
            "header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    let data_start = 8 + n;
    if need(data_start)? {
        return Ok(Parsed::NeedMore(data_start));
    }
    let json = &prefix[8..data_start as usize];
    let entries: Entries<serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| malformed(format!("header JSON: {e}")))?;

    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, value) in entries.0 {
        if !seen.insert(name.clone()) {
            return Err(malformed(format!("`{name}` appears twice in the header")));
        }
        if name == "__metadata__" {
            metadata = serde_json::from_value(value)
                .map_err(|e| malformed(format!("__metadata__ must map strings to strings: {e}")))?;
            continue;
        }
        let raw: RawTensor = serde_json::from_value(value)
            .map_err(|e| malformed(format!("tensor `{name}`: {e}")))?;
        tensors.push(tensor(name, raw, data_start, shard)?);
    }
    let ends = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.offset.checked_add(t.len)));
    check_extents(Format::Safetensors, ends, file_len)?;

    tensors.sort_by(|a, b| (a.offset, &a.name).cmp(&(b.offset, &b.name)));
    for pair in tensors.windows(2) {
        // Sorted by start, so only neighbours can overlap.
        if pair[1].offset < pair[0].offset + pair[0].len {
            return Err(malformed(format!(
                "tensors `{}` and `{}` overlap",
                pair[0].name, pair[1].name
            )));
        }
    }
    Ok(Parsed::Complete(SafetensorsFile { tensors, metadata }))
}

#[derive(serde::Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// One tensor of the header (whether its bytes lie inside the file is checked for all tensors at once).
fn tensor(name: String, raw: RawTensor, data_start: u64, shard: usize) -> Result<TensorInfo> {
    let dtype = match raw.dtype.as_str() {
        "F32" => GgmlType::F32,
        "F16" => GgmlType::F16,
        "BF16" => GgmlType::BF16,
        other => {
            return Err(Error::Unsupported(format!(
                "safetensors tensor `{name}` has dtype {other} (F32, F16 and BF16 are supported)"
            )))
        }
    };
    let bad = |why: String| malformed(format!("tensor `{name}` {:?}: {why}", raw.shape));
    let elements = raw
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| bad("element count overflows".into()))?;
    let len = dtype
        .byte_len(elements)
        .ok_or_else(|| bad("byte length overflows".into()))?;
    let (begin, end) = raw.data_offsets;
    if end < begin || end - begin != len {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] do not hold {len} bytes"
        )));
    }
    let offset = data_start
        .checked_add(begin)
        .ok_or_else(|| bad(format!("offset {begin} overflows")))?;
    // Every dim fits usize because their product does (or it is zero, and then each is checked).
    let shape = raw
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("dimension {d} overflows"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        offset,
        len,
        shard,
    })
}

/// Reads the header of safetensors file number `shard` from `src`.
pub async fn read_safetensors<S: ByteSource>(src: &S, shard: usize) -> Result<SafetensorsFile> {
    read_prefix_until(src, INITIAL_PREFIX, |prefix, len| {
        parse_header(prefix, len, shard)
    })
    .await
}

/// Parses `model.safetensors.index.json`.
pub fn parse_index(json: &[u8]) -> Result<ShardIndex> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: Entries<String>,
    }
    let index: Index = serde_json::from_slice(json).map_err(|e| Error::Malformed {
        format: Format::Json,
        detail: format!("safetensors index: {e}"),
    })?;
    let mut shards: Vec<String> = Vec::new();
    let mut tensor_shard = BTreeMap::new();
    for (tensor, file) in index.weight_map.0 {
        check_shard_name(&file)?;
        let i = match shards.iter().position(|s| *s == file) {
            Some(i) => i,
            None => {
                shards.push(file);
                shards.len() - 1
            }
        };
        if tensor_shard.insert(tensor.clone(), i).is_some() {
            return Err(Error::Malformed {
                format: Format::Json,
                detail: format!("safetensors index names tensor `{tensor}` twice"),
            });
        }
    }
    Ok(ShardIndex {
        shards,
        tensor_shard,
    })
}

/// Shard names are joined to the model's directory or URL, so they must not be able to leave it.
fn check_shard_name(name: &str) -> Result<()> {
    let bad = name.is_empty() || name.contains(['/', '\\', ':', '\0']) || name.contains("..");
    if bad {
        return Err(Error::Malformed {
            format: Format::Json,
            detail: format!(
                "safetensors index names shard {name:?}, which is not a plain file name"
            ),
        });
    }
    Ok(())
}

/// A JSON object's entries in document order, duplicates kept (serde_json's map would drop them silently).
struct Entries<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct EntriesVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(EntriesVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.resize(out.len() + data, 0);
        out
    }

    fn complete(bytes: &[u8]) -> Result<SafetensorsFile> {
        match parse_header(bytes, bytes.len() as u64, 1)? {
            Parsed::Complete(f) => Ok(f),
            Parsed::NeedMore(n) => panic!("whole file given, yet asked for {n} bytes"),
        }
    }

    const GOOD: &str = r#"{"b":{"dtype":"F16","shape":[2],"data_offsets":[24,28]},
        "__metadata__":{"format":"pt"},
        "a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},
        "s":{"dtype":"BF16","shape":[],"data_offsets":[28,30]},
        "e":{"dtype":"F32","shape":[0,4],"data_offsets":[30,30]}}"#;

    #[test]
    fn reads_header() {
        let bytes = file(GOOD, 30);
        let f = complete(&bytes).unwrap();
        let start = 8 + GOOD.len() as u64;
        let got: Vec<_> = f
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.dtype, t.shape.clone(), t.offset, t.len))
            .collect();
        assert_eq!(
            got,
            [
                ("a", GgmlType::F32, vec![2, 3], start, 24),
                ("b", GgmlType::F16, vec![2], start + 24, 4),
                ("s", GgmlType::BF16, vec![], start + 28, 2),
                ("e", GgmlType::F32, vec![0, 4], start + 30, 0),
            ]
        );
        assert!(f.tensors.iter().all(|t| t.shard == 1));
        assert_eq!(f.metadata.get("format").map(String::as_str), Some("pt"));
        assert_eq!(f.tensor("b").map(|t| t.len), Some(4));
    }

    #[test]
    fn prefix_asks_for_more() {
        let bytes = file(GOOD, 30);
        let header_end = 8 + GOOD.len();
        for cut in 0..header_end {
            let want = if cut < 8 { 8 } else { header_end as u64 };
            assert_eq!(
                parse_header(&bytes[..cut], bytes.len() as u64, 0).unwrap(),
                Parsed::NeedMore(want)
            );
            assert!(
                matches!(complete(&bytes[..cut]), Err(Error::Truncated { .. })),
                "cut {cut}"
            );
        }
        assert!(matches!(
            parse_header(&bytes[..header_end], bytes.len() as u64, 0),
            Ok(Parsed::Complete(_))
        ));
        assert!(matches!(
            complete(&bytes[..bytes.len() - 1]),
            Err(Error::Incomplete {
                format: Format::Safetensors,
                ..
            })
        ));
    }

    #[test]
    fn reads_through_source() {
        let src = crate::source::MemorySource {
            name: "m.safetensors".into(),
            bytes: file(GOOD, 30),
        };
        let f = futures::executor::block_on(read_safetensors(&src, 1)).unwrap();
        assert_eq!(f, complete(&src.bytes).unwrap());
    }

    fn assert_malformed(header: &str, data: usize) {
        match complete(&file(header, data)) {
            Err(Error::Malformed {
                format: Format::Safetensors,
                ..
            }) => {}
            other => panic!("{header}: expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_headers() {
        assert_malformed(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            8,
        );
        assert_malformed(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
            8,
        );
        assert_malformed(
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#,
            8,
        );
        assert_malformed(
            r#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}"#,
            8,
        );
        assert_malformed(
            r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            8,
        );
        assert_malformed(r#"{"a":{"dtype":"F32","shape":[1]}}"#, 8);
        assert_malformed(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
        );
        assert_malformed(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            8,
        );
        assert_malformed(r#"{"__metadata__":{"n":1}}"#, 0);
        assert_malformed(r#"[1,2]"#, 0);
        assert_malformed("{\"a\":", 0);
        assert_malformed("{\"\u{0}\u{ff}\":1}", 0);
        let mut bytes = file(r#"{"a":1}"#, 0);
        bytes[10] = 0xff;
        assert!(
            matches!(complete(&bytes), Err(Error::Malformed { .. })),
            "invalid UTF-8"
        );
    }

    #[test]
    fn rejects_bad_lengths_and_dtypes() {
        let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let r = complete(&file(header, 7));
        let data_start = 8 + header.len() as u64;
        assert!(
            matches!(&r, Err(Error::Incomplete { len, needed, tensor, .. })
                if (*len, *needed) == (data_start + 7, data_start + 8) && tensor == "a"),
            "{r:?}"
        );
        let r = complete(&file(
            r#"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
            8,
        ));
        assert!(
            matches!(&r, Err(Error::Unsupported(m)) if m.contains("ids") && m.contains("I64")),
            "{r:?}"
        );

        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert!(matches!(complete(&bytes), Err(Error::Malformed { .. })));
        let mut bytes = 1000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert!(matches!(complete(&bytes), Err(Error::Truncated { .. })));
        // The length field alone never makes it allocate: a big header in a big file only asks for more.
        assert_eq!(
            parse_header(&bytes, 1 << 40, 0).unwrap(),
            Parsed::NeedMore(1008)
        );
    }

    #[test]
    fn index_lists_shards_in_order() {
        let json = br#"{"metadata":{"total_size":10},"weight_map":{
            "z.weight":"model-00001-of-00002.safetensors",
            "a.weight":"model-00002-of-00002.safetensors",
            "m.weight":"model-00001-of-00002.safetensors"}}"#;
        let index = parse_index(json).unwrap();
        assert_eq!(
            index.shards,
            [
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        assert_eq!(index.tensor_shard["z.weight"], 0);
        assert_eq!(index.tensor_shard["a.weight"], 1);
        assert_eq!(index.tensor_shard["m.weight"], 0);
    }

    #[test]
    fn index_rejects_escaping_names() {
        for name in [
            "../x.safetensors",
            "/etc/passwd",
            "a/b.safetensors",
            "..",
            "",
            "c:\\x",
            "a\\..\\b",
        ] {
            let json = format!(
                r#"{{"weight_map":{{"t":{}}}}}"#,
                serde_json::to_string(name).unwrap()
            );
            assert!(
                matches!(parse_index(json.as_bytes()), Err(Error::Malformed { .. })),
                "{name:?}"
            );
        }
        assert!(
            parse_index(br#"{"weight_map":{"t":"a.safetensors","t":"b.safetensors"}}"#).is_err()
        );
        assert!(parse_index(br#"{"weight_map":{"t":1}}"#).is_err());
        assert!(parse_index(b"{}").is_err());
    }
}
