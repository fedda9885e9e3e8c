//! AdamW as PyTorch's `torch.optim.AdamW` computes it (decoupled weight decay; bias corrections folded into the
//! step size and the denominator in its order of operations), gradient clipping as `clip_grad_norm_`, and the
//! learning-rate schedule of *Build a Large Language Model From Scratch*, appendix D: a linear warm-up to the peak,
//! then a cosine decay to a floor.

use crate::lora::LoraFile;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamW {
    /// PyTorch's defaults, with ch. 7's learning rate (5e-5 is for full finetuning; LoRA takes larger steps).
    fn default() -> Self {
        Self { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// AdamW's running moments of one module's A and B, and the steps taken.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub step: u64,
    /// Per module key `"layer.target"`: (m_A, v_A, m_B, v_B).
    pub modules: BTreeMap<String, [Vec<f32>; 4]>,
}

fn key(layer: usize, target: crate::lora::Target) -> String {
    format!("{layer}.{}", target.hf_name())
}

/// One parameter tensor's update, as torch's single-tensor AdamW does it.
fn update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], o: &AdamW, lr: f32, step: u64) {
    let bias1 = 1.0 - o.beta1.powi(step as i32);
    let bias2_sqrt = (1.0 - o.beta2.powi(step as i32)).sqrt();
    let step_size = lr / bias1;
    for i in 0..p.len() {
        p[i] *= 1.0 - lr * o.weight_decay;
        m[i] = m[i] * o.beta1 + (1.0 - o.beta1) * g[i];
        v[i] = v[i] * o.beta2 + (1.0 - o.beta2) * g[i] * g[i];
        let denom = v[i].sqrt() / bias2_sqrt + o.eps;
        p[i] -= step_size * m[i] / denom;
    }
}

impl AdamW {
    /// One step at learning rate `lr` (the schedule's) over every module of `params`, with `grads` shaped alike.
    pub fn step(&self, params: &mut LoraFile, grads: &LoraFile, moments: &mut Moments, lr: f32) -> Result<()> {
        moments.step += 1;
        for (k, p) in params.modules.iter_mut() {
            let g = grads
                .modules
                .get(k)
                .filter(|g| g.a.len() == p.a.len() && g.b.len() == p.b.len())
                .ok_or_else(|| Error::InvalidArgument(format!("no gradient shaped like {}", p.name)))?;
            let [ma, va, mb, vb] = moments.modules.entry(key(k.0, k.1)).or_insert_with(|| {
                [vec![0.0; p.a.len()], vec![0.0; p.a.len()], vec![0.0; p.b.len()], vec![0.0; p.b.len()]]
            });
            if ma.len() != p.a.len() || mb.len() != p.b.len() {
                return Err(Error::InvalidArgument(format!("the optimiser's state does not fit {}", p.name)));
            }
            update(&mut p.a, &g.a, ma, va, self, lr, moments.step);
            update(&mut p.b, &g.b, mb, vb, self, lr, moments.step);
        }
        Ok(())
    }
}

/// The gradients' global L2 norm, and the gradients scaled down to `max_norm` when it is larger (as
/// `torch.nn.utils.clip_grad_norm_`: coefficient max_norm / (norm + 1e-6), at most 1).
pub fn clip_grad_norm(grads: &mut LoraFile, max_norm: f32) -> f32 {
    let sum: f64 = grads.modules.values().flat_map(|m| m.a.iter().chain(&m.b)).map(|&g| (g as f64) * (g as f64)).sum();
    let norm = sum.sqrt() as f32;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for m in grads.modules.values_mut() {
            for g in m.a.iter_mut().chain(m.b.iter_mut()) {
                *g *= coef;
            }
        }
    }
    norm
}

/// Appendix D's schedule: from `initial_lr`, linearly up to `peak_lr` over `warmup` steps, then a cosine decay to
/// `min_lr` at step `total`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub initial_lr: f32,
    pub peak_lr: f32,
    pub min_lr: f32,
    pub warmup: u64,
    pub total: u64,
}

impl Schedule {
    /// A constant rate.
    pub fn constant(lr: f32) -> Self {
        Self { initial_lr: lr, peak_lr: lr, min_lr: lr, warmup: 0, total: 1 }
    }

    /// The rate of step `step` (0-based).
    pub fn lr(&self, step: u64) -> f32 {
        if step < self.warmup {
            let increment = (self.peak_lr - self.initial_lr) / self.warmup as f32;
            return self.initial_lr + step as f32 * increment;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        (self.min_lr as f64 + (self.peak_lr - self.min_lr) as f64 * cosine) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let s = Schedule { initial_lr: 0.0, peak_lr: 1.0, min_lr: 0.1, warmup: 2, total: 6 };
        let lrs: Vec<f32> = (0..7).map(|i| s.lr(i)).collect();
        assert_eq!(lrs[0], 0.0);
        assert_eq!(lrs[1], 0.5);
        assert_eq!(lrs[2], 1.0);
        assert!((lrs[4] - 0.55).abs() < 1e-6, "{lrs:?}");
        assert!((lrs[6] - 0.1).abs() < 1e-6, "{lrs:?}");
        assert_eq!(Schedule::constant(0.3).lr(5), 0.3);
    }
}
