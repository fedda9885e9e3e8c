//! A trained adapter as files other tools read: a PEFT folder (adapter_config.json + adapter_model.safetensors,
//! tensors named as PEFT names them for the base's HF modules, q and k rows in HF's layout), and the checkpoint of a
//! run (that folder, the optimiser's moments, and the run's settings and step). Files are returned as bytes, so the
//! CLI writes them to disk and the browser to OPFS.

use super::optim::Moments;
use super::trainer::{TrainSettings, TrainState};
use crate::config::{Config, RopeLayout};
use crate::lora::{LoraFile, Target};
use crate::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const PEFT_CONFIG: &str = "adapter_config.json";
pub const PEFT_WEIGHTS: &str = "adapter_model.safetensors";
pub const OPTIMIZER: &str = "optimizer.safetensors";
pub const TRAINER: &str = "trainer.json";
/// Every file a checkpoint has.
pub const CHECKPOINT_FILES: [&str; 4] = [PEFT_CONFIG, PEFT_WEIGHTS, OPTIMIZER, TRAINER];

/// PEFT's tensor name for module (layer, target), half "A" or "B".
pub fn peft_key(layer: usize, target: Target, half: &str) -> String {
    format!("base_model.model.model.layers.{layer}.{}.lora_{half}.weight", target.hf_path())
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Named f32 tensors as one safetensors file.
fn safetensors_of(tensors: &[(String, Vec<usize>, Vec<u8>)]) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::InvalidArgument(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, None).map_err(|e| Error::InvalidArgument(format!("writing safetensors: {e}")))
}

/// The PEFT folder's two files for `params` (whose q/k rows follow `layout`, the loaded model's).
pub fn peft_files(
    params: &LoraFile,
    config: &Config,
    layout: RopeLayout,
    settings: &TrainSettings,
    base_model: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let hf = params.qk_rows_moved(config, layout, RopeLayout::SplitHalves);
    let mut tensors = Vec::new();
    for (&(layer, t), m) in &hf.modules {
        tensors.push((peft_key(layer, t, "A"), vec![m.rank, m.in_features], f32_bytes(&m.a)));
        tensors.push((peft_key(layer, t, "B"), vec![m.out_features, m.rank], f32_bytes(&m.b)));
    }
    let targets: Vec<&str> = settings.targets.iter().map(|t| t.hf_name()).collect();
    let adapter_config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": settings.rank,
        "lora_alpha": settings.alpha,
        "lora_dropout": 0.0,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "inference_mode": true,
    });
    Ok(vec![
        (PEFT_CONFIG.to_string(), serde_json::to_vec_pretty(&adapter_config).unwrap_or_default()),
        (PEFT_WEIGHTS.to_string(), safetensors_of(&tensors)?),
    ])
}

/// What a checkpoint says about its run besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerFile {
    pub settings: TrainSettings,
    pub step: u64,
    /// The base it was trained on (architecture, layers, hidden size), checked on resume.
    pub model: ModelShape,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShape {
    pub architecture: String,
    pub layers: usize,
    pub hidden_size: usize,
}

impl ModelShape {
    pub fn of(c: &Config) -> Self {
        Self { architecture: c.arch.name().to_string(), layers: c.num_hidden_layers, hidden_size: c.hidden_size }
    }
}

/// A run's checkpoint as named files: the PEFT folder, the moments, and trainer.json.
pub fn checkpoint_files(
    state: &TrainState,
    config: &Config,
    layout: RopeLayout,
    settings: &TrainSettings,
    base_model: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = peft_files(&state.params, config, layout, settings, base_model)?;
    let mut tensors = Vec::new();
    for (key, parts) in &state.moments.modules {
        for (name, values) in ["m_a", "v_a", "m_b", "v_b"].iter().zip(parts) {
            tensors.push((format!("{name}.{key}"), vec![values.len()], f32_bytes(values)));
        }
    }
    files.push((OPTIMIZER.to_string(), safetensors_of(&tensors)?));
    let trainer = TrainerFile { settings: settings.clone(), step: state.step, model: ModelShape::of(config) };
    files.push((TRAINER.to_string(), serde_json::to_vec_pretty(&trainer).unwrap_or_default()));
    Ok(files)
}

/// A checkpoint read back from its files (by name), with q/k rows moved into the model's `layout`.
pub fn read_checkpoint(
    files: &BTreeMap<String, Vec<u8>>,
    config: &Config,
    layout: RopeLayout,
) -> Result<(TrainSettings, TrainState)> {
    let get = |name: &str| {
        files.get(name).ok_or_else(|| Error::InvalidArgument(format!("the checkpoint has no {name}")))
    };
    let trainer: TrainerFile = serde_json::from_slice(get(TRAINER)?)
        .map_err(|e| Error::InvalidArgument(format!("the checkpoint's {TRAINER} is unreadable: {e}")))?;
    if trainer.model != ModelShape::of(config) {
        return Err(Error::InvalidArgument(format!(
            "the checkpoint was made for another model ({:?}), not this one ({:?})",
            trainer.model,
            ModelShape::of(config)
        )));
    }
    let params = LoraFile::from_peft(get(PEFT_CONFIG)?, get(PEFT_WEIGHTS)?)?.qk_rows_moved(config, RopeLayout::SplitHalves, layout);
    let optimizer = get(OPTIMIZER)?;
    let st = safetensors::SafeTensors::deserialize(optimizer)
        .map_err(|e| Error::InvalidArgument(format!("the checkpoint's {OPTIMIZER} is unreadable: {e}")))?;
    let mut moments = Moments { step: trainer.step, modules: BTreeMap::new() };
    for (name, view) in st.tensors() {
        let (part, key) = name.split_once('.').ok_or_else(|| Error::InvalidArgument(format!("odd moment `{name}`")))?;
        let slot = match part {
            "m_a" => 0,
            "v_a" => 1,
            "m_b" => 2,
            "v_b" => 3,
            _ => return Err(Error::InvalidArgument(format!("odd moment `{name}`"))),
        };
        if view.dtype() != Dtype::F32 {
            return Err(Error::InvalidArgument(format!("moment `{name}` is not f32")));
        }
        let values = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        moments.modules.entry(key.to_string()).or_insert_with(Default::default)[slot] = values;
    }
    let state = TrainState { params, moments, step: trainer.step };
    Ok((trainer.settings, state))
}
