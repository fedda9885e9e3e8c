//! A trained adapter as a llama.cpp GGUF LoRA (what convert_lora_to_gguf.py writes, and what
//! [`LoraFile::from_gguf`] and llama.cpp's `--lora` read): general.type = "adapter", adapter.type = "lora",
//! general.architecture = the base's, adapter.lora.alpha, and per module `blk.N.<role>.weight.lora_a` (ne [in, r])
//! and `….lora_b` (ne [r, out]) in f32. A llama base's q and k rows take llama.cpp's adjacent-pair order, as its
//! converter permutes them.

use crate::config::{Arch, Config, RopeLayout};
use crate::lora::LoraFile;
use crate::{Error, Result};

const ALIGNMENT: usize = 32;
const TYPE_U32: u32 = 4;
const TYPE_F32: u32 = 6;
const TYPE_STRING: u32 = 8;
const GGML_F32: u32 = 0;

enum Value<'a> {
    U32(u32),
    F32(f32),
    Str(&'a str),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// The adapter `params` (q/k rows in `layout`, the loaded model's) with scale alpha / r.
pub fn gguf_lora(params: &LoraFile, config: &Config, layout: RopeLayout, alpha: f32) -> Result<Vec<u8>> {
    let gguf_rows = if config.arch == Arch::Llama { RopeLayout::Adjacent } else { RopeLayout::SplitHalves };
    let file = params.qk_rows_moved(config, layout, gguf_rows);
    let metadata = [
        ("general.architecture", Value::Str(config.arch.name())),
        ("general.type", Value::Str("adapter")),
        ("general.name", Value::Str("Aviary LoRA")),
        ("general.alignment", Value::U32(ALIGNMENT as u32)),
        ("adapter.type", Value::Str("lora")),
        ("adapter.lora.alpha", Value::F32(alpha)),
    ];
    // (name, ne, values): ggml lists the innermost dimension first.
    let mut tensors: Vec<(String, [u64; 2], &[f32])> = Vec::new();
    for (&(layer, t), m) in &file.modules {
        let base = format!("blk.{layer}.{}.weight", t.gguf_name());
        tensors.push((format!("{base}.lora_a"), [m.in_features as u64, m.rank as u64], &m.a));
        tensors.push((format!("{base}.lora_b"), [m.rank as u64, m.out_features as u64], &m.b));
    }
    if tensors.is_empty() {
        return Err(Error::InvalidArgument("the adapter has no matrices to write".into()));
    }

    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in &metadata {
        put_str(&mut out, key);
        match value {
            Value::U32(v) => {
                out.extend(TYPE_U32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Value::F32(v) => {
                out.extend(TYPE_F32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Value::Str(s) => {
                out.extend(TYPE_STRING.to_le_bytes());
                put_str(&mut out, s);
            }
        }
    }
    let padded = |n: usize| n.div_ceil(ALIGNMENT) * ALIGNMENT;
    let mut offset = 0usize;
    for (name, ne, values) in &tensors {
        put_str(&mut out, name);
        out.extend(2u32.to_le_bytes());
        out.extend(ne[0].to_le_bytes());
        out.extend(ne[1].to_le_bytes());
        out.extend(GGML_F32.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset += padded(values.len() * 4);
    }
    out.resize(padded(out.len()), 0);
    for (_, _, values) in &tensors {
        let start = out.len();
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        out.resize(start + padded(values.len() * 4), 0);
    }
    Ok(out)
}
