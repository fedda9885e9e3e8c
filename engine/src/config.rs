//! Model hyper-parameters, from GGUF metadata or HF config.json, with every convention resolved into plain fields so
//! the forward pass never asks "which file did this come from?".

use crate::format::{MetaValue, Metadata};
use crate::{Error, Result};
use serde_json::Value;

/// The architectures `Arch` names, for telling a user which models run (keep beside `Arch`).
pub const ARCHITECTURES: &str = "it runs Llama, Gemma 2 and Gemma 3 models";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Arch {
    Llama,
    Gemma2,
    Gemma3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// Which elements RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RopeLayout {
    /// (2i, 2i+1): llama.cpp permutes q/k rows of llama-architecture GGUFs into this layout.
    Adjacent,
    /// (i, i + d/2): HF checkpoints, and every Gemma GGUF.
    SplitHalves,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    Silu,
    /// gelu_tanh(x) = 0.5x(1 + tanh(0.7978845608(x + 0.044715x^3))), in f32 as HF computes it.
    GeluTanh,
    /// The same GELU as llama.cpp computes it: x rounded to f16, looked up in an f16 table. GGUF models use it so
    /// that activations round into 8-bit blocks exactly as llama.cpp's do.
    GeluTanhF16Table,
}

/// Llama 3.1/3.2 frequency-dependent RoPE scaling.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// Base of global (full-attention) layers.
    pub rope_theta: f64,
    /// Gemma 3 sliding layers use their own base.
    pub rope_local_base_freq: Option<f64>,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub rope_layout: RopeLayout,
    /// Per layer: Some(W) when the layer attends to the last W positions only.
    pub layer_windows: Vec<Option<usize>>,
    /// Attention scores are multiplied by query_pre_attn_scalar^-1/2.
    pub query_pre_attn_scalar: f64,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    /// HF Gemma checkpoints store norm weights as w and compute x * (1 + w); GGUF converters already added the 1.
    pub norm_weight_offset: f32,
    pub hidden_act: Activation,
    /// Gemma multiplies embeddings by sqrt(hidden_size).
    pub embedding_scale: Option<f32>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl Config {
    pub fn has_qk_norm(&self) -> bool {
        self.arch == Arch::Gemma3
    }

    /// Gemma puts a norm after attention and after the MLP as well as before them.
    pub fn has_post_norms(&self) -> bool {
        matches!(self.arch, Arch::Gemma2 | Arch::Gemma3)
    }

    pub fn attention_scale(&self) -> f32 {
        (1.0 / self.query_pre_attn_scalar.sqrt()) as f32
    }

    /// RoPE base for one layer: Gemma 3's sliding layers use the local base.
    pub fn rope_base(&self, layer: usize) -> f64 {
        match (self.layer_windows.get(layer), self.rope_local_base_freq) {
            (Some(Some(_)), Some(local)) => local,
            _ => self.rope_theta,
        }
    }

    /// Inverse frequencies theta_i = base^(-2i/d) for one layer, with llama3 scaling applied when configured.
    pub fn inv_freq(&self, layer: usize) -> Vec<f32> {
        let d = self.head_dim;
        let base = self.rope_base(layer);
        (0..d / 2)
            .map(|i| {
                let inv = base.powf(-(2.0 * i as f64) / d as f64);
                match self.rope_scaling {
                    Some(s) => llama3_scale(inv, &s) as f32,
                    None => inv as f32,
                }
            })
            .collect()
    }

    fn validate(self) -> Result<Self> {
        let bad = |m: String| Err(Error::Config(m));
        if self.hidden_size == 0
            || self.num_hidden_layers == 0
            || self.vocab_size == 0
            || self.head_dim == 0
        {
            return bad(
                "hidden size, layer count, vocabulary and head size must be non-zero".into(),
            );
        }
        if self.num_attention_heads == 0
            || self.num_key_value_heads == 0
            || !self.num_attention_heads.is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "{} attention heads cannot be grouped over {} key/value heads",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head size {} must be even for RoPE", self.head_dim));
        }
        if self.layer_windows.len() != self.num_hidden_layers {
            return bad("one attention window per layer is required".into());
        }
        if self.layer_windows.contains(&Some(0)) {
            return bad("a sliding window of 0 positions".into());
        }
        // Guard against absurd sizes that would make us allocate terabytes from a hostile header.
        let limit = 1usize << 24;
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("vocab_size", self.vocab_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("head_dim", self.head_dim),
        ] {
            if v > limit {
                return bad(format!("{name} = {v} is implausibly large"));
            }
        }
        Ok(self)
    }

    /// From GGUF metadata (`general.architecture` + `{arch}.*` keys).
    pub fn from_gguf(meta: &Metadata) -> Result<Self> {
        let arch_name = meta
            .get("general.architecture")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| Error::Config("GGUF has no general.architecture".into()))?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "gemma2" => Arch::Gemma2,
            "gemma3" => Arch::Gemma3,
            other => return Err(Error::UnsupportedArchitecture(other.to_string())),
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let get_usize = |k: &str| -> Option<usize> {
            meta.get(&key(k))
                .and_then(MetaValue::as_u64)
                .and_then(|v| usize::try_from(v).ok())
        };
        let req_usize =
            |k: &str| get_usize(k).ok_or_else(|| Error::Config(format!("GGUF lacks {}", key(k))));
        let get_f64 = |k: &str| meta.get(&key(k)).and_then(MetaValue::as_f64);

        let hidden_size = req_usize("embedding_length")?;
        let num_hidden_layers = req_usize("block_count")?;
        // head_count may be an array (per layer) in some files; we need a single value.
        let head_count = |k: &str| -> Result<Option<usize>> {
            match meta.get(&key(k)) {
                None => Ok(None),
                Some(MetaValue::Array(a)) => {
                    let first = a.first().and_then(MetaValue::as_u64);
                    if a.iter().any(|v| v.as_u64() != first) {
                        return Err(Error::Unsupported(format!("per-layer {}", key(k))));
                    }
                    Ok(first.map(|v| v as usize))
                }
                Some(v) => Ok(v.as_u64().map(|v| v as usize)),
            }
        };
        let num_attention_heads = head_count("attention.head_count")?
            .ok_or_else(|| Error::Config(format!("GGUF lacks {}", key("attention.head_count"))))?;
        let num_key_value_heads =
            head_count("attention.head_count_kv")?.unwrap_or(num_attention_heads);
        if num_attention_heads == 0 {
            return Err(Error::Config("zero attention heads".into()));
        }
        let head_dim =
            get_usize("attention.key_length").unwrap_or(hidden_size / num_attention_heads);
        let intermediate_size = req_usize("feed_forward_length")?;
        let vocab_size = match get_usize("vocab_size") {
            Some(v) => v,
            None => meta
                .get("tokenizer.ggml.tokens")
                .and_then(MetaValue::as_array)
                .map(|a| a.len())
                .ok_or_else(|| {
                    Error::Config("GGUF has neither a vocab_size nor a vocabulary".into())
                })?,
        };
        let rms_norm_eps = get_f64("attention.layer_norm_rms_epsilon").unwrap_or(match arch {
            Arch::Llama => 1e-5,
            _ => 1e-6,
        });
        let rope_theta = get_f64("rope.freq_base").unwrap_or(match arch {
            Arch::Gemma3 => 1e6,
            _ => 10000.0,
        });
        let max_position_embeddings = get_usize("context_length").unwrap_or(2048);
        let sliding_window = get_usize("attention.sliding_window");
        let token_id = |k: &str| meta.get(k).and_then(MetaValue::as_u64).map(|v| v as u32);
        let mut eos_token_ids: Vec<u32> =
            ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
                .iter()
                .filter_map(|k| token_id(k))
                .collect();
        eos_token_ids.dedup();

        let (layer_windows, rope_local_base_freq, hidden_act, embedding_scale, rope_layout) =
            match arch {
                Arch::Llama => (
                    vec![None; num_hidden_layers],
                    None,
                    Activation::Silu,
                    None,
                    RopeLayout::Adjacent,
                ),
                Arch::Gemma2 => {
                    let w = sliding_window.unwrap_or(4096);
                    // Even layers are local, odd layers global.
                    let windows = (0..num_hidden_layers)
                        .map(|i| (i % 2 == 0).then_some(w))
                        .collect();
                    (
                        windows,
                        None,
                        Activation::GeluTanhF16Table,
                        Some((hidden_size as f32).sqrt()),
                        RopeLayout::SplitHalves,
                    )
                }
                Arch::Gemma3 => {
                    let w = sliding_window.unwrap_or(512);
                    let pattern = get_usize("attention.sliding_window_pattern")
                        .unwrap_or(6)
                        .max(1);
                    let windows = (0..num_hidden_layers)
                        .map(|i| ((i + 1) % pattern != 0).then_some(w))
                        .collect();
                    (
                        windows,
                        Some(10000.0),
                        Activation::GeluTanhF16Table,
                        Some((hidden_size as f32).sqrt()),
                        RopeLayout::SplitHalves,
                    )
                }
            };
        // llama.cpp does not store query_pre_attn_scalar: it scales by 1/sqrt(head_dim), except for Gemma 2 27B
        // (46 layers), where it uses hidden/heads.
        let query_pre_attn_scalar = if arch == Arch::Gemma2 && num_hidden_layers == 46 {
            (hidden_size / num_attention_heads) as f64
        } else {
            head_dim as f64
        };
        let (attn_logit_softcapping, final_logit_softcapping) = match arch {
            Arch::Gemma2 => (
                Some(get_f64("attn_logit_softcapping").unwrap_or(50.0)),
                Some(get_f64("final_logit_softcapping").unwrap_or(30.0)),
            ),
            _ => (
                get_f64("attn_logit_softcapping"),
                get_f64("final_logit_softcapping"),
            ),
        };
        Config {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            rope_local_base_freq,
            // llama3 scaling arrives as the rope_freqs tensor in GGUF, applied by the model loader.
            rope_scaling: None,
            rope_layout,
            layer_windows,
            query_pre_attn_scalar,
            attn_logit_softcapping,
            final_logit_softcapping,
            // Decided by the loader from the presence of `output.weight`.
            tie_word_embeddings: true,
            max_position_embeddings,
            norm_weight_offset: 0.0,
            hidden_act,
            embedding_scale,
            bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
            eos_token_ids,
        }
        .validate()
    }

    /// From a Hugging Face config.json (Llama, Gemma 2, Gemma 3 text; Gemma 3 multimodal uses its `text_config`).
    pub fn from_hf_json(json: &Value) -> Result<Self> {
        let model_type = json
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (arch, c) = match model_type {
            "llama" => (Arch::Llama, json),
            "gemma2" => (Arch::Gemma2, json),
            "gemma3_text" => (Arch::Gemma3, json),
            "gemma3" => (Arch::Gemma3, json.get("text_config").unwrap_or(json)),
            "" => return Err(Error::Config("config.json names no model_type".into())),
            other => return Err(Error::UnsupportedArchitecture(other.to_string())),
        };
        let get_usize = |k: &str| c.get(k).and_then(Value::as_u64).map(|v| v as usize);
        let req_usize =
            |k: &str| get_usize(k).ok_or_else(|| Error::Config(format!("config.json lacks `{k}`")));
        let get_f64 = |k: &str| c.get(k).and_then(Value::as_f64);

        let hidden_size = req_usize("hidden_size")?;
        let num_hidden_layers = req_usize("num_hidden_layers")?;
        let num_attention_heads = req_usize("num_attention_heads")?;
        if num_attention_heads == 0 {
            return Err(Error::Config("zero attention heads".into()));
        }
        let num_key_value_heads = get_usize("num_key_value_heads").unwrap_or(num_attention_heads);
        let gemma = arch != Arch::Llama;
        let head_dim = get_usize("head_dim").unwrap_or(if gemma {
            256
        } else {
            hidden_size / num_attention_heads
        });
        let sliding_window = get_usize("sliding_window");

        let layer_windows: Vec<Option<usize>> = match arch {
            Arch::Llama => vec![None; num_hidden_layers],
            _ => {
                let w = sliding_window.unwrap_or(if arch == Arch::Gemma2 { 4096 } else { 512 });
                if let Some(types) = c.get("layer_types").and_then(Value::as_array) {
                    if types.len() != num_hidden_layers {
                        return Err(Error::Config(
                            "layer_types must list one entry per layer".into(),
                        ));
                    }
                    types
                        .iter()
                        .map(|t| match t.as_str() {
                            Some("sliding_attention") => Ok(Some(w)),
                            Some("full_attention") => Ok(None),
                            other => Err(Error::Config(format!("unknown layer type {other:?}"))),
                        })
                        .collect::<Result<_>>()?
                } else if arch == Arch::Gemma2 {
                    (0..num_hidden_layers)
                        .map(|i| (i % 2 == 0).then_some(w))
                        .collect()
                } else {
                    let pattern = get_usize("sliding_window_pattern").unwrap_or(6).max(1);
                    (0..num_hidden_layers)
                        .map(|i| ((i + 1) % pattern != 0).then_some(w))
                        .collect()
                }
            }
        };

        // transformers < 5 writes rope_theta / rope_scaling / rope_local_base_freq; transformers 5 writes
        // rope_parameters, either flat or keyed by layer type.
        let rope_params = c.get("rope_parameters").and_then(Value::as_object);
        let (global_rope, local_rope) = match rope_params {
            Some(p) if p.contains_key("full_attention") || p.contains_key("sliding_attention") => (
                p.get("full_attention").and_then(Value::as_object),
                p.get("sliding_attention").and_then(Value::as_object),
            ),
            Some(p) => (Some(p), None),
            None => (None, None),
        };
        let scaling_obj = global_rope.or_else(|| c.get("rope_scaling").and_then(Value::as_object));
        let rope_scaling = match scaling_obj {
            Some(s) => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match kind {
                    "llama3" => {
                        let f = |k: &str| {
                            s.get(k).and_then(Value::as_f64).ok_or_else(|| {
                                Error::Config(format!("llama3 rope scaling lacks `{k}`"))
                            })
                        };
                        Some(Llama3RopeScaling {
                            factor: f("factor")?,
                            low_freq_factor: f("low_freq_factor")?,
                            high_freq_factor: f("high_freq_factor")?,
                            original_max_position_embeddings: f(
                                "original_max_position_embeddings",
                            )?,
                        })
                    }
                    "default" | "" => None,
                    other => {
                        return Err(Error::Unsupported(format!("rope scaling type `{other}`")))
                    }
                }
            }
            None => None,
        };
        let theta_of = |o: Option<&serde_json::Map<String, Value>>| {
            o.and_then(|o| o.get("rope_theta")).and_then(Value::as_f64)
        };
        let rope_theta = theta_of(global_rope)
            .or_else(|| get_f64("rope_theta"))
            .unwrap_or(if arch == Arch::Gemma3 { 1e6 } else { 10000.0 });
        let rope_local_base_freq = (arch == Arch::Gemma3).then(|| {
            theta_of(local_rope)
                .or_else(|| get_f64("rope_local_base_freq"))
                .unwrap_or(10000.0)
        });
        let hidden_act = match c
            .get("hidden_activation")
            .or_else(|| c.get("hidden_act"))
            .and_then(Value::as_str)
            .unwrap_or(if gemma { "gelu_pytorch_tanh" } else { "silu" })
        {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_tanh" => Activation::GeluTanh,
            other => return Err(Error::Unsupported(format!("activation `{other}`"))),
        };
        let ids = |k: &str| -> Vec<u32> {
            match json.get(k).or_else(|| c.get(k)) {
                Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|v| v as u32)
                    .collect(),
                _ => vec![],
            }
        };
        Config {
            arch,
            vocab_size: req_usize("vocab_size")?,
            hidden_size,
            intermediate_size: req_usize("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: get_f64("rms_norm_eps").unwrap_or(if gemma { 1e-6 } else { 1e-5 }),
            rope_theta,
            rope_local_base_freq,
            rope_scaling,
            rope_layout: RopeLayout::SplitHalves,
            layer_windows,
            query_pre_attn_scalar: get_f64("query_pre_attn_scalar").unwrap_or(head_dim as f64),
            attn_logit_softcapping: if arch == Arch::Gemma2 {
                get_f64("attn_logit_softcapping")
            } else {
                None
            },
            final_logit_softcapping: if arch == Arch::Gemma3 {
                None
            } else {
                get_f64("final_logit_softcapping")
            },
            tie_word_embeddings: c
                .get("tie_word_embeddings")
                .or_else(|| json.get("tie_word_embeddings"))
                .and_then(Value::as_bool)
                .unwrap_or(gemma),
            max_position_embeddings: get_usize("max_position_embeddings").unwrap_or(2048),
            norm_weight_offset: if gemma { 1.0 } else { 0.0 },
            hidden_act,
            embedding_scale: gemma.then(|| (hidden_size as f32).sqrt()),
            bos_token_id: ids("bos_token_id").first().copied(),
            eos_token_ids: ids("eos_token_id"),
        }
        .validate()
    }
}

/// Llama 3's frequency-dependent scaling of one inverse frequency (see MODELS.md).
fn llama3_scale(inv: f64, s: &Llama3RopeScaling) -> f64 {
    let wavelen = 2.0 * std::f64::consts::PI / inv;
    let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    if wavelen < high_wavelen {
        inv
    } else if wavelen > low_wavelen {
        inv / s.factor
    } else {
        let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
            / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * inv / s.factor + smooth * inv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma3_pattern_makes_every_sixth_layer_global() {
        let json = serde_json::json!({
            "model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 7, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 16, "intermediate_size": 128, "vocab_size": 300,
            "sliding_window": 5, "query_pre_attn_scalar": 24
        });
        let c = Config::from_hf_json(&json).unwrap();
        let globals: Vec<usize> = (0..7).filter(|&i| c.layer_windows[i].is_none()).collect();
        assert_eq!(globals, vec![5]);
        assert_eq!(c.rope_base(0), 10000.0);
        assert_eq!(c.rope_base(5), 1e6);
        assert_eq!(c.norm_weight_offset, 1.0);
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let s = Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        assert_eq!(llama3_scale(1.0, &s), 1.0);
        let low = 2.0 * std::f64::consts::PI / 100_000.0;
        assert!((llama3_scale(low, &s) - low / 8.0).abs() < 1e-15);
    }

    #[test]
    fn bad_head_grouping_is_an_error() {
        let json = serde_json::json!({
            "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 3, "intermediate_size": 128, "vocab_size": 300
        });
        assert!(matches!(Config::from_hf_json(&json), Err(Error::Config(_))));
    }
}
