//! The header parsers against real files and against damaged copies of them.
//!
//! Real files: llama.cpp's vocab GGUFs, two small GGUFs written and read back by gguf-py
//! (tests/fixtures/format/gen_format_fixtures.py), and a safetensors file written by the `safetensors` crate.
//! Damaged copies (every truncation of the first 64 KiB, thousands of seeded bit flips and byte overwrites, shrunken
//! file lengths) must give a value — Complete, NeedMore within the file, or an error — and never a panic.
// Native only: it reads files from disk, and wasm32 has no file system (the browser tests are tests/web_goldens.rs).
#![cfg(not(target_arch = "wasm32"))]

use engine::format::{gguf, safetensors as st, MetaValue, Parsed};
use engine::quant::GgmlType;
use engine::Error;
use serde_json::Value;
mod common;

use std::collections::HashMap;
use std::path::PathBuf;

fn shared(rel: &str) -> PathBuf {
    common::reference(rel)
}

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/format/"
    ))
    .join(rel)
}

fn read(path: &PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const VOCABS: [&str; 4] = [
    "ggml-vocab-gpt-2.gguf",
    "ggml-vocab-llama-bpe.gguf",
    "ggml-vocab-llama-spm.gguf",
    "ggml-vocab-phi-3.gguf",
];

/// The first bytes of each vocab file: its header runs far past this, so every cut lands inside metadata.
const PREFIX: usize = 64 << 10;

/// xorshift64*: deterministic damage without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Values that make counts and lengths extreme when they land in one.
const NASTY: [u8; 6] = [0x00, 0xff, 0x7f, 0x80, 0x01, 0x40];

/// Damages `bytes` in place: 1 to 8 bit flips or byte overwrites, mostly near the start where counts and lengths are.
fn damage(rng: &mut Rng, bytes: &mut [u8]) {
    for _ in 0..1 + rng.below(8) {
        let span = if rng.below(2) == 0 {
            bytes.len().min(512)
        } else {
            bytes.len()
        };
        let at = rng.below(span);
        match rng.below(3) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = NASTY[rng.below(NASTY.len())],
            _ => bytes[at] = rng.next() as u8,
        }
    }
}

/// The contract of `parse_header` for a prefix of a file of `file_len` bytes, whatever the bytes are.
fn check_gguf(prefix: &[u8], file_len: u64) -> Option<gguf::GgufFile> {
    match gguf::parse_header(prefix, file_len) {
        Ok(Parsed::Complete(f)) => {
            for t in &f.tensors {
                assert!(
                    t.offset + t.len <= file_len,
                    "tensor `{}` past the end",
                    t.name
                );
                assert_eq!(t.offset % f.alignment, 0);
            }
            Some(f)
        }
        Ok(Parsed::NeedMore(n)) => {
            let have = prefix.len().min(file_len as usize) as u64;
            assert!(
                n > have && n <= file_len,
                "NeedMore({n}) with {have} of {file_len} bytes"
            );
            None
        }
        Err(_) => None,
    }
}

fn check_safetensors(prefix: &[u8], file_len: u64) -> Option<st::SafetensorsFile> {
    match st::parse_header(prefix, file_len, 0) {
        Ok(Parsed::Complete(f)) => {
            for t in &f.tensors {
                assert!(
                    t.offset + t.len <= file_len,
                    "tensor `{}` past the end",
                    t.name
                );
            }
            Some(f)
        }
        Ok(Parsed::NeedMore(n)) => {
            assert!(
                n > prefix.len() as u64 && n <= file_len,
                "NeedMore({n}) with {} of {file_len}",
                prefix.len()
            );
            None
        }
        Err(_) => None,
    }
}

fn complete_gguf(bytes: &[u8]) -> gguf::GgufFile {
    match gguf::parse_header(bytes, bytes.len() as u64) {
        Ok(Parsed::Complete(f)) => f,
        other => panic!("expected a complete header, got {other:?}"),
    }
}

#[test]
fn vocab_headers_parse() {
    // (file, architecture, tokenizer model, token count, first token, last token, merges) as gguf-py reads them.
    let expect = [
        (
            "ggml-vocab-gpt-2.gguf",
            "gpt2",
            "gpt2",
            50257,
            "!",
            "<|endoftext|>",
            Some(50000),
        ),
        (
            "ggml-vocab-llama-bpe.gguf",
            "llama",
            "gpt2",
            128256,
            "!",
            "<|reserved_special_token_250|>",
            Some(280147),
        ),
        (
            "ggml-vocab-llama-spm.gguf",
            "llama",
            "llama",
            32000,
            "<unk>",
            "给",
            None,
        ),
        (
            "ggml-vocab-phi-3.gguf",
            "phi3",
            "llama",
            32064,
            "<unk>",
            "[PAD32063]",
            None,
        ),
    ];
    for (name, arch, model, n_tokens, first, last, merges) in expect {
        let bytes = read(&shared(&format!("vocab/{name}")));
        let f = complete_gguf(&bytes);
        assert_eq!(f.version, 3, "{name}");
        assert!(f.tensors.is_empty(), "{name}");
        assert_eq!(f.architecture(), Some(arch), "{name}");
        assert_eq!(
            f.get("tokenizer.ggml.model").and_then(MetaValue::as_str),
            Some(model),
            "{name}"
        );
        let tokens = f
            .get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
            .expect("tokens");
        assert_eq!(tokens.len(), n_tokens, "{name}");
        assert_eq!(tokens[0].as_str(), Some(first), "{name}");
        assert_eq!(tokens[n_tokens - 1].as_str(), Some(last), "{name}");
        let n_merges = f
            .get("tokenizer.ggml.merges")
            .and_then(MetaValue::as_array)
            .map(<[_]>::len);
        assert_eq!(n_merges, merges, "{name}");

        // Through a ByteSource too (llama-bpe's 7.8 MB header takes several reads).
        let src = engine::source::MemorySource {
            name: name.into(),
            bytes,
        };
        assert_eq!(
            futures::executor::block_on(gguf::read_gguf(&src)).unwrap(),
            f,
            "{name}"
        );
    }
}

/// Compares a parsed value with gguf-py's reading of it: the GGUF type chain and the value.
fn assert_meta(key: &str, got: &MetaValue, types: &[u64], want: &Value) {
    let ty = types[0];
    match (got, want) {
        (MetaValue::Array(items), Value::Array(wants)) => {
            assert_eq!(ty, 9, "{key}");
            assert_eq!(items.len(), wants.len(), "{key}");
            for (g, w) in items.iter().zip(wants) {
                assert_meta(key, g, &types[1..], w);
            }
        }
        (MetaValue::String(s), Value::String(w)) => {
            assert_eq!((ty, s.as_str()), (8, w.as_str()), "{key}")
        }
        (MetaValue::Bool(b), Value::Bool(w)) => assert_eq!((ty, *b), (7, *w), "{key}"),
        (MetaValue::F32(v), Value::Number(w)) => {
            assert_eq!((ty, *v as f64), (6, w.as_f64().unwrap()), "{key}")
        }
        (MetaValue::F64(v), Value::Number(w)) => {
            assert_eq!((ty, *v), (12, w.as_f64().unwrap()), "{key}")
        }
        (v, Value::Number(w)) => {
            let want_ty = match v {
                MetaValue::U8(_) => 0,
                MetaValue::I8(_) => 1,
                MetaValue::U16(_) => 2,
                MetaValue::I16(_) => 3,
                MetaValue::U32(_) => 4,
                MetaValue::I32(_) => 5,
                MetaValue::U64(_) => 10,
                MetaValue::I64(_) => 11,
                other => panic!("{key}: {other:?} is not an integer"),
            };
            assert_eq!(ty, want_ty, "{key}");
            match w.as_i64() {
                Some(w) => assert_eq!(v.as_i64(), Some(w), "{key}"),
                None => assert_eq!(v.as_u64(), w.as_u64(), "{key}"),
            }
        }
        (g, w) => panic!("{key}: {g:?} vs gguf-py's {w}"),
    }
}

#[test]
fn gguf_fixtures_match_gguf_py() {
    for name in ["tiny.gguf", "tiny-align64.gguf"] {
        let bytes = read(&fixture(name));
        let reference: Value =
            serde_json::from_slice(&read(&fixture(&format!("{name}.json")))).unwrap();
        let f = complete_gguf(&bytes);
        assert_eq!(
            f.version as u64,
            reference["version"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            f.alignment,
            reference["alignment"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            f.data_offset,
            reference["data_offset"].as_u64().unwrap(),
            "{name}"
        );

        let want_tensors = reference["tensors"].as_array().unwrap();
        assert_eq!(f.tensors.len(), want_tensors.len(), "{name}");
        for (t, w) in f.tensors.iter().zip(want_tensors) {
            assert_eq!(t.name, w["name"].as_str().unwrap());
            assert_eq!(
                t.dtype,
                GgmlType::from_id(w["type"].as_u64().unwrap() as u32).unwrap(),
                "{}",
                t.name
            );
            // gguf-py lists dims innermost first, as stored; TensorInfo has them outermost first.
            let mut dims: Vec<usize> = w["dims"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            dims.reverse();
            assert_eq!(t.shape, dims, "{}", t.name);
            assert_eq!(t.offset, w["offset"].as_u64().unwrap(), "{}", t.name);
            assert_eq!(t.len, w["n_bytes"].as_u64().unwrap(), "{}", t.name);
            assert_eq!(t.shard, 0);
        }

        let want_meta = reference["metadata"].as_object().unwrap();
        assert_eq!(f.metadata.len(), want_meta.len(), "{name}");
        for (key, w) in want_meta {
            let types: Vec<u64> = w["types"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap())
                .collect();
            assert_meta(
                key,
                f.get(key).unwrap_or_else(|| panic!("{name}: no {key}")),
                &types,
                &w["value"],
            );
        }
    }
}

#[test]
fn gguf_truncations() {
    for name in VOCABS {
        let bytes = read(&shared(&format!("vocab/{name}")));
        let len = bytes.len() as u64;
        // Every cut in the first 4 KiB (magic, counts, the first keys), then a stride through the rest.
        let cuts = (0..4096).chain((4096..=PREFIX).step_by(193));
        for cut in cuts {
            let prefix = &bytes[..cut];
            match gguf::parse_header(prefix, len) {
                Ok(Parsed::NeedMore(n)) => assert!(
                    n > cut as u64 && n <= len,
                    "{name} cut {cut}: NeedMore({n})"
                ),
                other => panic!("{name} cut {cut}: {other:?}"),
            }
            // The same bytes as the whole file: a truncated file, never a request for more.
            let r = gguf::parse_header(prefix, cut as u64);
            assert!(
                matches!(r, Err(Error::Truncated { .. } | Error::Malformed { .. })),
                "{name} cut {cut}: {r:?}"
            );
        }
    }
    for name in ["tiny.gguf", "tiny-align64.gguf"] {
        let bytes = read(&fixture(name));
        let full = complete_gguf(&bytes);
        let data_end = full.tensors.iter().map(|t| t.offset + t.len).max().unwrap() as usize;
        for cut in 0..bytes.len() {
            match check_gguf(&bytes[..cut], bytes.len() as u64) {
                // Only the tensor data is missing: the header is the whole file's.
                Some(f) => assert_eq!(f, full, "{name} cut {cut}"),
                None => assert!(cut < full.data_offset as usize, "{name} cut {cut}"),
            }
            let as_file = check_gguf(&bytes[..cut], cut as u64);
            assert_eq!(
                as_file.is_some(),
                cut >= data_end,
                "{name} cut {cut}: parsed {as_file:?}"
            );
        }
    }
}

#[test]
fn gguf_damage() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut files: Vec<(String, Vec<u8>, u64)> = VOCABS
        .iter()
        .map(|name| {
            let bytes = read(&shared(&format!("vocab/{name}")));
            let len = bytes.len() as u64;
            (name.to_string(), bytes[..PREFIX].to_vec(), len)
        })
        .collect();
    for name in ["tiny.gguf", "tiny-align64.gguf"] {
        let bytes = read(&fixture(name));
        let len = bytes.len() as u64;
        files.push((name.to_string(), bytes, len));
    }
    let mut parsed = 0;
    for round in 0..6000 {
        let (_, original, len) = &files[round % files.len()];
        let mut bytes = original.clone();
        damage(&mut rng, &mut bytes);
        parsed += check_gguf(&bytes, *len).is_some() as usize;
        // A shorter file than the bytes claim: the header's own lengths now run past its end.
        let shrunk = rng.below(bytes.len() + 1) as u64;
        check_gguf(&bytes, shrunk);
        check_gguf(&bytes[..shrunk as usize], *len);
    }
    // Flips in padding, tensor data or string bytes leave a valid file, so some must still parse.
    assert!(parsed > 0);
}

/// A small safetensors file written by the `safetensors` crate: three dtypes, a scalar, and metadata.
fn safetensors_file() -> Vec<u8> {
    use safetensors::tensor::{Dtype, TensorView};
    let data: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let tensors = vec![
        (
            "model.embed_tokens.weight",
            TensorView::new(Dtype::F32, vec![16, 32], &data[..2048]).unwrap(),
        ),
        (
            "model.layers.0.input_layernorm.weight",
            TensorView::new(Dtype::BF16, vec![32], &data[..64]).unwrap(),
        ),
        (
            "model.layers.0.self_attn.q_proj.weight",
            TensorView::new(Dtype::F16, vec![8, 32], &data[..512]).unwrap(),
        ),
        (
            "model.norm.weight",
            TensorView::new(Dtype::F16, vec![32], &data[..64]).unwrap(),
        ),
        (
            "scale",
            TensorView::new(Dtype::F32, vec![], &data[..4]).unwrap(),
        ),
    ];
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize(tensors, Some(meta)).unwrap()
}

#[test]
fn safetensors_header_matches_the_crate() {
    let bytes = safetensors_file();
    let f = match st::parse_header(&bytes, bytes.len() as u64, 2).unwrap() {
        Parsed::Complete(f) => f,
        other => panic!("{other:?}"),
    };
    let reference = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(f.tensors.len(), reference.len());
    for (name, view) in reference.tensors() {
        let t = f.tensor(&name).unwrap_or_else(|| panic!("no {name}"));
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => GgmlType::F32,
            safetensors::Dtype::F16 => GgmlType::F16,
            safetensors::Dtype::BF16 => GgmlType::BF16,
            other => panic!("{other:?}"),
        };
        assert_eq!(t.dtype, dtype, "{name}");
        assert_eq!(t.shape, view.shape(), "{name}");
        // The crate hands out slices of the buffer: their position is the absolute offset.
        assert_eq!(
            t.offset as usize,
            view.data().as_ptr() as usize - bytes.as_ptr() as usize,
            "{name}"
        );
        assert_eq!(t.len as usize, view.data().len(), "{name}");
        assert_eq!(t.shard, 2);
    }
    assert!(
        f.tensors.windows(2).all(|w| w[0].offset < w[1].offset),
        "not in file order"
    );
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let want: std::collections::BTreeMap<_, _> = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert_eq!(f.metadata, want);

    let src = engine::source::MemorySource {
        name: "model.safetensors".into(),
        bytes: bytes.clone(),
    };
    assert_eq!(
        futures::executor::block_on(st::read_safetensors(&src, 2)).unwrap(),
        f
    );
}

#[test]
fn safetensors_truncations_and_damage() {
    let bytes = safetensors_file();
    let len = bytes.len() as u64;
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for cut in 0..bytes.len() {
        let got = check_safetensors(&bytes[..cut], len);
        assert_eq!(got.is_some(), cut >= header_end, "cut {cut}");
        assert!(
            check_safetensors(&bytes[..cut], cut as u64).is_none(),
            "cut {cut}: a truncated file parsed"
        );
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..4000 {
        let mut damaged = bytes.clone();
        damage(&mut rng, &mut damaged);
        check_safetensors(&damaged, len);
        let shrunk = rng.below(damaged.len() + 1);
        check_safetensors(&damaged, shrunk as u64);
        check_safetensors(&damaged[..shrunk], len);
        check_safetensors(&damaged[..shrunk], u64::MAX);
    }
}

#[test]
fn safetensors_other_dtypes_are_unsupported_by_name() {
    use safetensors::tensor::{Dtype, TensorView};
    let data = [0u8; 16];
    let tensors = vec![
        (
            "a",
            TensorView::new(Dtype::F32, vec![2], &data[..8]).unwrap(),
        ),
        (
            "position_ids",
            TensorView::new(Dtype::I64, vec![1], &data[..8]).unwrap(),
        ),
    ];
    let bytes = safetensors::tensor::serialize(tensors, None).unwrap();
    match st::parse_header(&bytes, bytes.len() as u64, 0) {
        Err(Error::Unsupported(m)) => {
            assert!(m.contains("position_ids") && m.contains("I64"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}
