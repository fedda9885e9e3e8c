//! LoRA adapters applied at run time, never merged: a decorated projection computes y = W·x + s·B(A·x), with
//! s = (alpha / r, or alpha / √r with rslora) × the user's scale, for every active adapter in turn.
//!
//! One representation for both file kinds and both backends: [`LoraFile`] is what a PEFT folder
//! ([`LoraFile::from_peft`]) or a llama.cpp GGUF adapter ([`LoraFile::from_gguf`]) holds, as f32 matrices in HF
//! orientation (A `[r, in]`, B `[out, r]`); [`Adapter`] is that file fitted to one loaded model and uploaded to its
//! backend; a [`LoraStack`] says which adapters are active at what scale. The stack travels with a KV cache
//! ([`crate::model::Cache::lora`]): keys and values computed under one stack are only valid under that stack.
//!
//! Scales: PEFT's own (alpha / r per module, alpha and r overridden by `alpha_pattern` / `rank_pattern`, alpha / √r
//! with `use_rslora`). A GGUF adapter gets llama.cpp's: `adapter.lora.alpha` / r, or 1 when the file has no alpha —
//! so an rslora adapter converted by llama.cpp's convert_lora_to_gguf.py (which writes only lora_alpha) is scaled
//! alpha / r, exactly as llama.cpp scales it.

mod fit;
mod gguf;
mod peft;

use crate::backend::Backend;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::rc::Rc;

pub use fit::{Adapter, Group, GroupId, LayerLora, LowRank};

/// Adapter files above this are refused before they are read (the largest real ones are a few hundred MB).
pub const MAX_ADAPTER_BYTES: u64 = 1 << 30;

/// The projections an adapter may decorate, in the order a layer runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The HF module name (`q_proj`, …), as PEFT's target_modules list them.
    pub fn hf_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The GGUF tensor role (`attn_q`, …).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        }
    }

    /// The HF module path inside a layer (`self_attn.q_proj`), as PEFT names tensors.
    pub fn hf_path(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    fn from_hf(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.hf_name() == name)
    }

    fn from_gguf(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.gguf_name() == name)
    }
}

/// Which file an adapter came from; it decides the row order of q and k (see [`LoraFile::qk_rows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LoraKind {
    Peft,
    Gguf,
}

/// One decorated projection: A `[rank, in]`, B `[out, rank]` (f32, HF orientation) and its file's scale.
#[derive(Debug, Clone, PartialEq)]
pub struct LowRankF32 {
    /// The A matrix's tensor name, for messages.
    pub name: String,
    pub rank: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    /// alpha / r (or alpha / √r), before the user's scale.
    pub scale: f32,
}

/// An adapter as its file holds it, not yet fitted to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraFile {
    pub kind: LoraKind,
    /// The GGUF's general.architecture (PEFT folders name no architecture; their shapes are checked instead).
    pub architecture: Option<String>,
    pub modules: BTreeMap<(usize, Target), LowRankF32>,
}

/// What the UI and the CLI show of an adapter.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraInfo {
    pub kind: LoraKind,
    /// Smallest and largest rank over its modules.
    pub rank: (usize, usize),
    pub targets: Vec<Target>,
    pub layers: usize,
    pub parameters: u64,
}

impl LoraFile {
    /// Rows of q and k follow the file's rope layout: HF's split halves for PEFT, and llama.cpp's adjacent pairs in
    /// a llama-architecture GGUF (its converter permutes B's rows as it permutes the base's).
    pub fn qk_rows(&self) -> crate::config::RopeLayout {
        use crate::config::RopeLayout;
        match (self.kind, self.architecture.as_deref()) {
            (LoraKind::Gguf, Some("llama")) => RopeLayout::Adjacent,
            _ => RopeLayout::SplitHalves,
        }
    }

    pub fn info(&self) -> LoraInfo {
        let mut targets: Vec<Target> = self.modules.keys().map(|&(_, t)| t).collect();
        targets.sort();
        targets.dedup();
        let ranks = self.modules.values().map(|m| m.rank);
        let mut layers: Vec<usize> = self.modules.keys().map(|&(l, _)| l).collect();
        layers.dedup();
        LoraInfo {
            kind: self.kind,
            rank: (ranks.clone().min().unwrap_or(0), ranks.max().unwrap_or(0)),
            targets,
            layers: layers.len(),
            parameters: self
                .modules
                .values()
                .map(|m| (m.a.len() + m.b.len()) as u64)
                .sum(),
        }
    }

    /// Pairs each module's A and B found under `(layer, target, is_b)` keys, checking that they fit each other.
    fn pair(
        kind: LoraKind,
        architecture: Option<String>,
        halves: Halves,
        scale_of: impl Fn(usize, Target, usize) -> Result<f32>,
    ) -> Result<Self> {
        let mut modules = BTreeMap::new();
        for (&(layer, target, is_b), (name, shape, _)) in &halves {
            let other = (layer, target, !is_b);
            if !halves.contains_key(&other) {
                let missing = if is_b { "A" } else { "B" };
                return Err(Error::Adapter(format!(
                    "`{name}` has no matching LoRA {missing} matrix"
                )));
            }
            if shape.len() != 2 {
                return Err(Error::Adapter(format!(
                    "`{name}` has shape {shape:?}; a LoRA matrix has two dimensions"
                )));
            }
        }
        for ((layer, target, is_b), (a_name, a_shape, a)) in &halves {
            if *is_b {
                continue;
            }
            let (b_name, b_shape, b) = &halves[&(*layer, *target, true)];
            let (rank, in_features) = (a_shape[0], a_shape[1]);
            let (out_features, b_rank) = (b_shape[0], b_shape[1]);
            if rank != b_rank || rank == 0 {
                return Err(Error::Adapter(format!(
                    "rank mismatch: `{a_name}` has rank {rank} but `{b_name}` has rank {b_rank}"
                )));
            }
            let scale = scale_of(*layer, *target, rank)?;
            if !scale.is_finite() {
                return Err(Error::Adapter(format!(
                    "`{a_name}`: the adapter's scale is not a finite number"
                )));
            }
            modules.insert(
                (*layer, *target),
                LowRankF32 {
                    name: a_name.clone(),
                    rank,
                    in_features,
                    out_features,
                    a: a.clone(),
                    b: b.clone(),
                    scale,
                },
            );
        }
        if modules.is_empty() {
            return Err(Error::Adapter("the file holds no LoRA matrices".into()));
        }
        Ok(Self {
            kind,
            architecture,
            modules,
        })
    }
}

impl LoraFile {
    /// An adapter of rank `rank` on `targets` of every layer of a model shaped like `config`, with small random A
    /// and B (seeded): what a benchmark measures the cost of adapters with, and where fine-tuning starts from.
    pub fn random(config: &crate::config::Config, rank: usize, alpha: f32, targets: &[Target], seed: u64) -> Self {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
        };
        let mut modules = BTreeMap::new();
        for layer in 0..config.num_hidden_layers {
            for &t in targets {
                let (in_features, out_features) = fit::dims(config, t);
                modules.insert(
                    (layer, t),
                    LowRankF32 {
                        name: format!("layers.{layer}.{}.lora_A.weight", t.hf_path()),
                        rank,
                        in_features,
                        out_features,
                        a: (0..rank * in_features).map(|_| next()).collect(),
                        b: (0..out_features * rank).map(|_| next()).collect(),
                        scale: alpha / rank.max(1) as f32,
                    },
                );
            }
        }
        Self {
            kind: LoraKind::Peft,
            architecture: Some(config.arch.name().to_string()),
            modules,
        }
    }
}

/// A file's LoRA matrices by (layer, target, is B): (tensor name, shape, values).
type Halves = BTreeMap<(usize, Target, bool), (String, Vec<usize>, Vec<f32>)>;

/// Reads tensor `t` of a whole adapter file `bytes` as f32 into `halves` under `key`; a second tensor for the same
/// key is an error, not a silent replacement.
fn insert_half(
    halves: &mut Halves,
    key: (usize, Target, bool),
    bytes: &[u8],
    t: &crate::format::TensorInfo,
) -> Result<()> {
    let data = usize::try_from(t.offset)
        .ok()
        .zip(usize::try_from(t.len).ok())
        .and_then(|(start, len)| bytes.get(start..start.checked_add(len)?))
        .ok_or_else(|| Error::Adapter(format!("`{}` lies past the end of the file", t.name)))?;
    let values = crate::quant::dequantize_to_vec(t.dtype, data, t.elements())?;
    if halves.insert(key, (t.name.clone(), t.shape.clone(), values)).is_some() {
        return Err(Error::Adapter(format!("`{}` appears twice", t.name)));
    }
    Ok(())
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Which adapters a forward pass applies, each with the user's scale. Adapters at scale 0 are left out, so a stack
/// of only those is the base model, bit for bit.
pub struct LoraStack<B: Backend> {
    active: Vec<(Rc<Adapter<B>>, f32)>,
}

impl<B: Backend> Default for LoraStack<B> {
    fn default() -> Self {
        Self { active: Vec::new() }
    }
}

impl<B: Backend> Clone for LoraStack<B> {
    fn clone(&self) -> Self {
        Self {
            active: self.active.clone(),
        }
    }
}

impl<B: Backend> LoraStack<B> {
    pub fn new(adapters: impl IntoIterator<Item = (Rc<Adapter<B>>, f32)>) -> Self {
        Self {
            active: adapters.into_iter().filter(|(_, s)| *s != 0.0).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// What identifies the stack's arithmetic: equal keys, equal logits.
    pub fn key(&self) -> Vec<(u64, u32)> {
        self.active
            .iter()
            .map(|(a, s)| (a.id, s.to_bits()))
            .collect()
    }

    pub fn active(&self) -> impl Iterator<Item = (&Adapter<B>, f32)> {
        self.active.iter().map(|(a, s)| (a.as_ref(), *s))
    }

    /// The active adapters as shared handles, to build a larger stack from.
    pub fn shared(&self) -> Vec<(Rc<Adapter<B>>, f32)> {
        self.active.clone()
    }
}


#[cfg(not(target_arch = "wasm32"))]
impl LoraFile {
    /// A PEFT folder (adapter_config.json + adapter_model.safetensors) or a GGUF adapter file.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let read = |p: &std::path::Path| -> Result<Vec<u8>> {
            let len = std::fs::metadata(p)
                .map_err(|e| Error::Adapter(format!("{}: {e}", p.display())))?
                .len();
            if len > MAX_ADAPTER_BYTES {
                return Err(Error::Adapter(format!(
                    "{} is {len} bytes, more than the {MAX_ADAPTER_BYTES} an adapter may have",
                    p.display()
                )));
            }
            std::fs::read(p).map_err(|e| Error::Adapter(format!("{}: {e}", p.display())))
        };
        if path.is_dir() {
            let config = path.join("adapter_config.json");
            let weights = path.join("adapter_model.safetensors");
            if !weights.exists() && path.join("adapter_model.bin").exists() {
                return Err(Error::Adapter(format!(
                    "{} holds adapter_model.bin (a pickle); save the adapter with safe_serialization=True",
                    path.display()
                )));
            }
            LoraFile::from_peft(&read(&config)?, &read(&weights)?)
        } else {
            LoraFile::from_gguf(&read(path)?)
        }
    }
}
