//! llama.cpp's GGUF LoRA adapters (src/llama-adapter.cpp): general.type = "adapter", adapter.type = "lora",
//! general.architecture = the base's, adapter.lora.alpha, tensors `blk.N.attn_q.weight.lora_a` (ne [in, r]) and
//! `….lora_b` (ne [r, out]) — `[r, in]` and `[out, r]` once the reader puts the outer dimension first.

use super::{LoraFile, LoraKind, Target, MAX_ADAPTER_BYTES};
use crate::format::{gguf, MetaValue, Parsed};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// `blk.N.attn_q.weight.lora_a` → (layer, target, is B).
fn parse_name(name: &str) -> Result<(usize, Target, bool)> {
    let (base, is_b) = match (name.strip_suffix(".lora_a"), name.strip_suffix(".lora_b")) {
        (Some(base), _) => (base, false),
        (_, Some(base)) => (base, true),
        _ => return Err(Error::Adapter(format!("`{name}` is not a LoRA matrix"))),
    };
    let parts: Vec<&str> = base.split('.').collect();
    let parsed = match parts.as_slice() {
        ["blk", n, role, "weight"] => n.parse::<usize>().ok().zip(Target::from_gguf(role)),
        _ => None,
    };
    let Some((layer, target)) = parsed else {
        return Err(Error::Adapter(format!(
            "`{name}` targets a weight Aviary cannot decorate (attention and MLP projections only)"
        )));
    };
    Ok((layer, target, is_b))
}

impl LoraFile {
    /// A llama.cpp GGUF LoRA adapter from its bytes.
    pub fn from_gguf(bytes: &[u8]) -> Result<Self> {
        if bytes.len() as u64 > MAX_ADAPTER_BYTES {
            return Err(Error::Adapter(format!(
                "the adapter is {} bytes, more than the {MAX_ADAPTER_BYTES} an adapter may have",
                bytes.len()
            )));
        }
        let file = match gguf::parse_header(bytes, bytes.len() as u64)? {
            Parsed::Complete(f) => f,
            Parsed::NeedMore(_) => return Err(Error::Adapter("the GGUF adapter is truncated".into())),
        };
        let text = |k: &str| file.get(k).and_then(MetaValue::as_str);
        if text("general.type") != Some("adapter") {
            return Err(Error::Adapter(match text("general.type") {
                Some(t) => format!("this GGUF is a {t}, not an adapter (general.type = \"{t}\")"),
                None => "this GGUF is not an adapter (it has no general.type = \"adapter\"); is it a model?".into(),
            }));
        }
        match text("adapter.type") {
            Some("lora") => {}
            other => {
                return Err(Error::Adapter(format!(
                    "a GGUF adapter of type {:?}; only LoRA adapters are supported",
                    other.unwrap_or("(none)")
                )))
            }
        }
        let architecture = file.architecture().map(str::to_string);
        // llama.cpp: no alpha (or 0) means the user's scale alone.
        let alpha = file
            .get("adapter.lora.alpha")
            .and_then(MetaValue::as_f64)
            .unwrap_or(0.0);
        let mut halves = BTreeMap::new();
        for t in &file.tensors {
            let (layer, target, is_b) = parse_name(&t.name)?;
            super::insert_half(&mut halves, (layer, target, is_b), bytes, t)?;
        }
        LoraFile::pair(LoraKind::Gguf, architecture, halves, |_, _, rank| {
            Ok(if alpha == 0.0 { 1.0 } else { (alpha / rank as f64) as f32 })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(parse_name("blk.3.ffn_down.weight.lora_b").unwrap(), (3, Target::Down, true));
        assert_eq!(parse_name("blk.0.attn_output.weight.lora_a").unwrap(), (0, Target::O, false));
        for bad in ["token_embd.weight.lora_a", "output.weight.lora_b", "blk.0.attn_norm.weight.lora_a", "blk.0.attn_q.weight"] {
            assert!(parse_name(bad).unwrap_err().to_string().contains(bad), "{bad}");
        }
    }
}
