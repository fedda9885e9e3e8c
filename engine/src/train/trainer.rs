//! A training run: the examples split into training and validation (seeded), each epoch's order a seeded shuffle,
//! optimizer steps of `batch × accum` examples (`batch` sequences stacked at a time, so accumulation costs no
//! memory: it only sets how many stacks one step averages over), the appendix D schedule, clipping, AdamW, and a
//! state that a checkpoint captures whole, so a resumed run continues with the same losses as one never stopped.

use super::backend::TrainBackend;
use super::data::{shuffle, split};
use super::lora::DeviceLora;
use super::optim::{clip_grad_norm, AdamW, Moments, Schedule};
use super::pass::{loss, loss_and_grads_within, Example};
use crate::lora::{LoraFile, Target};
use crate::model::Transformer;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Everything that decides a run's numbers (kept in its checkpoints, so a resume runs the same run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub rank: usize,
    pub alpha: f32,
    pub targets: Vec<Target>,
    /// The peak learning rate is `optimizer.lr`.
    pub optimizer: AdamW,
    /// Linear warm-up steps from lr / 10 to the peak (appendix D), then a cosine decay to lr / 10.
    pub warmup_steps: u64,
    /// Clip the gradients' global norm to this (None: no clipping).
    pub clip: Option<f32>,
    pub epochs: u32,
    pub batch: usize,
    pub accum: usize,
    pub seed: u64,
    pub val_fraction: f32,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: Target::ALL.to_vec(),
            optimizer: AdamW { lr: 1e-3, ..AdamW::default() },
            warmup_steps: 2,
            clip: Some(1.0),
            epochs: 1,
            batch: 4,
            accum: 1,
            seed: 123,
            val_fraction: 0.1,
        }
    }
}

impl TrainSettings {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if self.rank == 0 || self.rank > 1024 {
            return bad(format!("rank {} is not between 1 and 1024", self.rank));
        }
        if self.targets.is_empty() {
            return bad("no projection to adapt: name at least one target".into());
        }
        let o = &self.optimizer;
        if !(o.lr > 0.0 && o.lr < 1.0) || !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) || !(o.eps > 0.0) {
            return bad(format!("the optimiser's settings are out of range: {o:?}"));
        }
        if !(0.0..1.0).contains(&o.weight_decay) || !self.alpha.is_finite() || self.alpha <= 0.0 {
            return bad("weight decay must be in [0, 1) and alpha above 0".into());
        }
        if self.epochs == 0 || self.batch == 0 || self.accum == 0 {
            return bad("epochs, batch and accumulation must each be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(format!("the validation fraction {} is not in [0, 1)", self.val_fraction));
        }
        if self.clip.is_some_and(|c| !(c > 0.0)) {
            return bad("the clipping norm must be above 0".into());
        }
        Ok(())
    }

    fn schedule(&self, total: u64) -> Schedule {
        let lr = self.optimizer.lr;
        Schedule { initial_lr: lr / 10.0, peak_lr: lr, min_lr: lr / 10.0, warmup: self.warmup_steps.min(total), total }
    }
}

/// Where a run stands: the adapter, the optimiser's moments and the steps taken.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    pub params: LoraFile,
    pub moments: Moments,
    pub step: u64,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// 1-based: the steps done after this one.
    pub step: u64,
    pub total_steps: u64,
    /// The epoch this step's examples came from (0-based).
    pub epoch: u32,
    /// The mean loss over the step's scored targets, before the update.
    pub loss: f32,
    pub tokens: usize,
    pub lr: f32,
    pub grad_norm: f32,
}

/// The most bytes a stack's whole tape may take before the backward pass recomputes each layer's forward instead
/// (the default of [`Trainer::tape_budget`]: about twice SmolLM2-135M's inference footprint in all).
pub const DEFAULT_TAPE_BUDGET: usize = 256 << 20;

pub struct Trainer<'m, B: TrainBackend> {
    backend: &'m B,
    model: &'m Transformer<B>,
    pub settings: TrainSettings,
    /// Memory against arithmetic: a stack's tape above this many bytes is rebuilt layer by layer in the backward
    /// pass (the numbers do not change).
    pub tape_budget: usize,
    train: Vec<Example>,
    val: Vec<Example>,
    pub state: TrainState,
}

impl<'m, B: TrainBackend> Trainer<'m, B> {
    /// A run over `examples` starting from `init` (an adapter shaped for this model: a fresh
    /// [`LoraFile::random`] one, or a checkpoint's state).
    pub fn new(
        backend: &'m B,
        model: &'m Transformer<B>,
        settings: TrainSettings,
        examples: Vec<Example>,
        state: TrainState,
    ) -> Result<Self> {
        settings.validate()?;
        if examples.is_empty() {
            return Err(Error::InvalidArgument("no examples to train on".into()));
        }
        let (train_idx, val_idx) = split(examples.len(), settings.val_fraction, settings.seed);
        let pick = |idx: &[usize]| idx.iter().map(|&i| examples[i].clone()).collect::<Vec<_>>();
        let (train, val) = (pick(&train_idx), pick(&val_idx));
        Ok(Self { backend, model, settings, tape_budget: DEFAULT_TAPE_BUDGET, train, val, state })
    }

    /// A fresh state: small random A and B (seeded; B is not zero, so every matrix learns from the first step).
    pub fn fresh_state(model: &Transformer<B>, settings: &TrainSettings) -> TrainState {
        let params = LoraFile::random(&model.config, settings.rank, settings.alpha, &settings.targets, settings.seed);
        TrainState { params, moments: Moments::default(), step: 0 }
    }

    pub fn train_examples(&self) -> usize {
        self.train.len()
    }

    pub fn val_examples(&self) -> usize {
        self.val.len()
    }

    fn per_step(&self) -> usize {
        self.settings.batch * self.settings.accum
    }

    pub fn steps_per_epoch(&self) -> u64 {
        self.train.len().div_ceil(self.per_step()) as u64
    }

    pub fn total_steps(&self) -> u64 {
        self.steps_per_epoch() * self.settings.epochs as u64
    }

    pub fn done(&self) -> bool {
        self.state.step >= self.total_steps()
    }

    /// The examples of step `step` (0-based): its slice of its epoch's shuffled order.
    fn step_examples(&self, step: u64) -> (u32, Vec<&Example>) {
        let per_epoch = self.steps_per_epoch().max(1);
        let epoch = (step / per_epoch) as u32;
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        shuffle(&mut order, self.settings.seed.wrapping_add(epoch as u64));
        let start = (step % per_epoch) as usize * self.per_step();
        let end = (start + self.per_step()).min(order.len());
        (epoch, order[start..end].iter().map(|&i| &self.train[i]).collect())
    }

    /// One optimizer step. A loss that is not a finite number stops the run before the update, so the state (and
    /// the last checkpoint) stays the last good one.
    pub async fn step(&mut self) -> Result<StepReport> {
        if self.done() {
            return Err(Error::InvalidArgument("the run has finished".into()));
        }
        let step = self.state.step;
        let total = self.total_steps();
        let (epoch, examples) = self.step_examples(step);
        let batch: Vec<Example> = examples.into_iter().cloned().collect();
        let device = DeviceLora::upload(self.backend, &self.state.params)?;
        let together = self.settings.batch;
        let out = loss_and_grads_within(self.backend, self.model, &device, &batch, together, self.tape_budget).await?;
        if !out.loss.is_finite() {
            return Err(Error::Training(format!(
                "the loss became {} at step {}; the last checkpoint is kept: lower the learning rate and resume",
                out.loss,
                step + 1
            )));
        }
        let mut grads = out.grads.as_file(&self.state.params);
        let grad_norm = match self.settings.clip {
            Some(max) => clip_grad_norm(&mut grads, max),
            None => clip_grad_norm(&mut grads, f32::INFINITY),
        };
        if !grad_norm.is_finite() {
            return Err(Error::Training(format!(
                "the gradients became {grad_norm} at step {}; the last checkpoint is kept: lower the learning rate \
                 and resume",
                step + 1
            )));
        }
        let lr = self.settings.schedule(total).lr(step);
        self.settings.optimizer.step(&mut self.state.params, &grads, &mut self.state.moments, lr)?;
        self.state.step += 1;
        Ok(StepReport { step: step + 1, total_steps: total, epoch, loss: out.loss, tokens: out.tokens, lr, grad_norm })
    }

    /// The mean loss over the validation examples' scored targets (None without validation examples).
    pub async fn validation_loss(&self) -> Result<Option<f32>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let device = DeviceLora::upload(self.backend, &self.state.params)?;
        Ok(Some(loss(self.backend, self.model, &device, &self.val, self.settings.batch).await?))
    }
}
