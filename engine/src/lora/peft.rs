//! PEFT adapters: adapter_config.json + adapter_model.safetensors, tensors named
//! `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` (`[r, in]`) and `….lora_B.weight` (`[out, r]`).

use super::{LoraFile, LoraKind, Target, MAX_ADAPTER_BYTES};
use crate::format::{safetensors, Parsed};
use crate::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;

/// The adapter_config.json fields that decide the arithmetic.
struct PeftConfig {
    r: usize,
    alpha: f64,
    rslora: bool,
    rank_pattern: Vec<(String, usize)>,
    alpha_pattern: Vec<(String, f64)>,
}

impl PeftConfig {
    fn parse(json: &[u8]) -> Result<Self> {
        let v: Value = serde_json::from_slice(json)
            .map_err(|e| Error::Adapter(format!("adapter_config.json is not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::Adapter("adapter_config.json is not a JSON object".into()))?;
        let peft_type = obj.get("peft_type").and_then(Value::as_str).unwrap_or("LORA");
        if !peft_type.eq_ignore_ascii_case("lora") {
            return Err(Error::Adapter(format!(
                "a {peft_type} adapter; only LoRA adapters are supported"
            )));
        }
        let truthy = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
        if truthy("use_dora") {
            return Err(Error::Adapter(
                "a DoRA adapter (use_dora); only plain LoRA is supported".into(),
            ));
        }
        if truthy("lora_bias") {
            return Err(Error::Adapter("LoRA biases (lora_bias) are not supported".into()));
        }
        match obj.get("bias").and_then(Value::as_str) {
            None | Some("none") => {}
            Some(b) => {
                return Err(Error::Adapter(format!(
                    "trained biases (bias = \"{b}\") are not supported"
                )))
            }
        }
        match obj.get("modules_to_save") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(m) => {
                return Err(Error::Adapter(format!(
                    "modules_to_save ({m}) carries whole replacement weights, which are not supported"
                )))
            }
        }
        let r = obj
            .get("r")
            .and_then(Value::as_u64)
            .filter(|&r| r > 0)
            .ok_or_else(|| Error::Adapter("adapter_config.json has no positive r".into()))?
            as usize;
        let alpha = obj
            .get("lora_alpha")
            .and_then(Value::as_f64)
            .unwrap_or(8.0);
        let pattern = |k: &str| -> Result<Vec<(String, f64)>> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Object(m)) => m
                    .iter()
                    .map(|(key, v)| match v.as_f64() {
                        Some(x) => Ok((key.clone(), x)),
                        None => Err(Error::Adapter(format!("{k}[\"{key}\"] is not a number"))),
                    })
                    .collect(),
                Some(_) => Err(Error::Adapter(format!("{k} is not an object"))),
            }
        };
        let rank_pattern = pattern("rank_pattern")?
            .into_iter()
            .map(|(k, r)| (k, r as usize))
            .collect();
        Ok(Self {
            r,
            alpha,
            rslora: truthy("use_rslora"),
            rank_pattern,
            alpha_pattern: pattern("alpha_pattern")?,
        })
    }

    /// PEFT's per-module override: a key names the module or a suffix of its dotted path (PEFT matches
    /// `(.*\.)?{key}$`). Keys that are regular expressions beyond that are refused rather than misread.
    fn lookup<T: Copy>(patterns: &[(String, T)], module: &str) -> Result<Option<T>> {
        for (key, value) in patterns {
            if key.chars().any(|c| "*+?[](){}|^$\\".contains(c)) {
                return Err(Error::Adapter(format!(
                    "the pattern \"{key}\" is a regular expression; only module names are supported"
                )));
            }
            if module == key || module.ends_with(&format!(".{key}")) {
                return Ok(Some(*value));
            }
        }
        Ok(None)
    }

    fn scale(&self, module: &str, rank: usize) -> Result<f32> {
        let r = Self::lookup(&self.rank_pattern, module)?.unwrap_or(self.r);
        if r != rank {
            return Err(Error::Adapter(format!(
                "rank mismatch: `{module}` has rank {rank} in the weights but {r} in adapter_config.json"
            )));
        }
        let alpha = Self::lookup(&self.alpha_pattern, module)?.unwrap_or(self.alpha);
        let r = r as f64;
        Ok(if self.rslora { alpha / r.sqrt() } else { alpha / r } as f32)
    }
}

/// `…layers.N.self_attn.q_proj.lora_A.weight` → (module path after `base_model.model.`, layer, target, is B).
fn parse_name(name: &str) -> Result<(String, usize, Target, bool)> {
    let unsupported = |what: &str| Error::Adapter(format!("`{name}`: {what} are not supported"));
    let parts: Vec<&str> = name.split('.').collect();
    if parts.iter().any(|p| p.starts_with("lora_magnitude_vector")) {
        return Err(unsupported("DoRA magnitude vectors"));
    }
    if parts.iter().any(|p| p.starts_with("lora_embedding")) {
        return Err(unsupported("embedding adapters"));
    }
    let Some(at) = parts.iter().position(|p| *p == "lora_A" || *p == "lora_B") else {
        if parts.iter().any(|p| matches!(*p, "embed_tokens" | "lm_head")) {
            return Err(unsupported("whole embedding or output weights"));
        }
        return Err(Error::Adapter(format!("`{name}` is not a LoRA matrix")));
    };
    if parts.last() == Some(&"bias") {
        return Err(unsupported("LoRA biases"));
    }
    let module = &parts[..at];
    if module.iter().any(|p| matches!(*p, "embed_tokens" | "lm_head")) {
        return Err(unsupported("adapters on the embedding or the output head"));
    }
    let layer_at = module.iter().position(|p| *p == "layers");
    let layer = layer_at
        .and_then(|i| module.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok());
    let target = module.last().and_then(|m| Target::from_hf(m));
    let (Some(layer), Some(target)) = (layer, target) else {
        return Err(Error::Adapter(format!(
            "`{name}` targets a module Aviary cannot decorate (q/k/v/o/gate/up/down projections only)"
        )));
    };
    let joined = module.join(".");
    let path = joined.strip_prefix("base_model.model.").unwrap_or(&joined).to_string();
    Ok((path, layer, target, parts[at] == "lora_B"))
}

impl LoraFile {
    /// A PEFT adapter from its two files' bytes.
    pub fn from_peft(config_json: &[u8], weights: &[u8]) -> Result<Self> {
        if weights.len() as u64 > MAX_ADAPTER_BYTES {
            return Err(Error::Adapter(format!(
                "adapter_model.safetensors is {} bytes, more than the {MAX_ADAPTER_BYTES} an adapter may have",
                weights.len()
            )));
        }
        let config = PeftConfig::parse(config_json)?;
        let file = match safetensors::parse_header(weights, weights.len() as u64, 0)? {
            Parsed::Complete(f) => f,
            Parsed::NeedMore(_) => {
                return Err(Error::Adapter(
                    "adapter_model.safetensors is truncated".into(),
                ))
            }
        };
        let mut halves = BTreeMap::new();
        let mut paths = BTreeMap::new();
        for t in &file.tensors {
            let (path, layer, target, is_b) = parse_name(&t.name)?;
            super::insert_half(&mut halves, (layer, target, is_b), weights, t)?;
            paths.insert((layer, target), path);
        }
        LoraFile::pair(LoraKind::Peft, None, halves, |layer, target, rank| {
            config.scale(&paths[&(layer, target)], rank)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_layer_and_target() {
        let (path, layer, target, is_b) =
            parse_name("base_model.model.model.layers.12.mlp.down_proj.lora_B.weight").unwrap();
        assert_eq!((path.as_str(), layer, target, is_b), ("model.layers.12.mlp.down_proj", 12, Target::Down, true));
        let named = parse_name("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight").unwrap();
        assert_eq!((named.1, named.2, named.3), (0, Target::Q, false));
    }

    #[test]
    fn unsupported_tensors_are_refused_by_name() {
        for (name, says) in [
            ("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", "DoRA"),
            ("base_model.model.model.embed_tokens.lora_embedding_A", "embedding"),
            ("base_model.model.lm_head.lora_A.weight", "output head"),
            ("base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias", "biases"),
            ("base_model.model.model.embed_tokens.weight", "embedding"),
            ("base_model.model.model.layers.0.self_attn.rotary.lora_A.weight", "cannot decorate"),
        ] {
            let e = parse_name(name).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(says), "{name}: {e}");
        }
    }

    #[test]
    fn config_scales_follow_peft() {
        let c = PeftConfig::parse(
            br#"{"peft_type":"LORA","r":4,"lora_alpha":8,"rank_pattern":{"k_proj":2},"alpha_pattern":{"down_proj":3}}"#,
        )
        .unwrap();
        assert_eq!(c.scale("model.layers.0.self_attn.q_proj", 4).unwrap(), 2.0);
        assert_eq!(c.scale("model.layers.0.self_attn.k_proj", 2).unwrap(), 4.0);
        assert_eq!(c.scale("model.layers.0.mlp.down_proj", 4).unwrap(), 0.75);
        assert!(c.scale("model.layers.0.self_attn.q_proj", 8).unwrap_err().to_string().contains("rank mismatch"));
        let rs = PeftConfig::parse(br#"{"r":16,"lora_alpha":8,"use_rslora":true}"#).unwrap();
        assert_eq!(rs.scale("x.q_proj", 16).unwrap(), 2.0);
    }

    #[test]
    fn unsupported_configs_are_refused() {
        for (json, says) in [
            (r#"{"r":4,"use_dora":true}"#, "DoRA"),
            (r#"{"r":4,"modules_to_save":["lm_head"]}"#, "modules_to_save"),
            (r#"{"r":4,"bias":"all"}"#, "biases"),
            (r#"{"peft_type":"IA3"}"#, "IA3"),
            (r#"{"lora_alpha":8}"#, "no positive r"),
            ("not json", "not valid JSON"),
        ] {
            let e = PeftConfig::parse(json.as_bytes()).err().expect(json).to_string();
            assert!(e.contains(says), "{json}: {e}");
        }
    }
}
