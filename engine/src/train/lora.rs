//! The LoRA matrices being trained, on the backend, and their gradients on the host. Both are keyed like
//! [`LoraFile::modules`] (layer, projection) and hold HF's orientation: A `[r, in]`, B `[out, r]`, with q and k rows
//! in the loaded model's RoPE layout.

use super::backend::TrainBackend;
use crate::lora::{LoraFile, LowRankF32, Target};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// One decorated projection's matrices and scale (alpha / r).
pub struct Module<T> {
    pub a: T,
    pub b: T,
    pub scale: f32,
    pub rank: usize,
    pub in_features: usize,
    pub out_features: usize,
}

pub struct DeviceLora<B: TrainBackend> {
    modules: BTreeMap<(usize, Target), Module<B::Tensor>>,
}

impl<B: TrainBackend> DeviceLora<B> {
    /// `file`'s matrices on the backend (their rows already in the model's layout).
    pub fn upload(b: &B, file: &LoraFile) -> Result<Self> {
        let mut modules = BTreeMap::new();
        for (&key, m) in &file.modules {
            modules.insert(
                key,
                Module {
                    a: b.tensor(m.rank, m.in_features, &m.a)?,
                    b: b.tensor(m.out_features, m.rank, &m.b)?,
                    scale: m.scale,
                    rank: m.rank,
                    in_features: m.in_features,
                    out_features: m.out_features,
                },
            );
        }
        Ok(Self { modules })
    }

    pub fn module(&self, layer: usize, target: Target) -> Option<&Module<B::Tensor>> {
        self.modules.get(&(layer, target))
    }
}

/// dA and dB of every module.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads {
    pub modules: BTreeMap<(usize, Target), (Vec<f32>, Vec<f32>)>,
}

impl Grads {
    pub fn zeros_like<B: TrainBackend>(lora: &DeviceLora<B>) -> Self {
        let modules = lora
            .modules
            .iter()
            .map(|(&k, m)| (k, (vec![0.0; m.rank * m.in_features], vec![0.0; m.out_features * m.rank])))
            .collect();
        Self { modules }
    }

    /// Adds `scale` × (da, db) to the module's gradients.
    pub fn add(&mut self, layer: usize, target: Target, da: &[f32], db: &[f32], scale: f32) -> Result<()> {
        let (ga, gb) = self
            .modules
            .get_mut(&(layer, target))
            .ok_or_else(|| Error::Backend(format!("no LoRA gradient for layer {layer} {target:?}")))?;
        if ga.len() != da.len() || gb.len() != db.len() {
            return Err(Error::Backend(format!("LoRA gradient of layer {layer} {target:?} changed shape")));
        }
        for (g, d) in ga.iter_mut().zip(da) {
            *g += scale * d;
        }
        for (g, d) in gb.iter_mut().zip(db) {
            *g += scale * d;
        }
        Ok(())
    }

    /// The gradients as a [`LoraFile`] shaped like `like` (for comparing and saving).
    pub fn as_file(&self, like: &LoraFile) -> LoraFile {
        let modules = like
            .modules
            .iter()
            .filter_map(|(k, m)| {
                let (da, db) = self.modules.get(k)?;
                Some((*k, LowRankF32 { a: da.clone(), b: db.clone(), ..m.clone() }))
            })
            .collect();
        LoraFile { modules, ..like.clone() }
    }
}
