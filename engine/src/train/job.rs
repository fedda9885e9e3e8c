//! A training run as a front end asks for it (the browser's Train view through the worker protocol): the records,
//! how they become examples, and the run's settings; and what the run reports back.

use super::data::{encode, PromptStyle, Record};
use super::pass::Example;
use super::trainer::{StepReport, TrainSettings};
use crate::chat::ChatTemplate;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The most records one run takes (the page's datasets are capped alike).
pub const MAX_RECORDS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainJob {
    /// The run's name: its checkpoint's folder, and the adapter's name when it ends.
    pub name: String,
    pub records: Vec<Record>,
    pub style: PromptStyle,
    pub mask_instructions: bool,
    pub max_len: usize,
    pub settings: TrainSettings,
    /// Steps between checkpoints (and validation losses).
    pub checkpoint_every: u64,
}

/// The job's examples, and how many were cut to `max_len`.
pub fn examples(job: &TrainJob, tokenizer: &Tokenizer, template: &ChatTemplate) -> Result<(Vec<Example>, usize)> {
    if job.records.is_empty() {
        return Err(Error::InvalidArgument("the dataset is empty: make or import some rows first".into()));
    }
    if job.records.len() > MAX_RECORDS {
        return Err(Error::InvalidArgument(format!(
            "{} rows, more than the {MAX_RECORDS} one run takes",
            job.records.len()
        )));
    }
    if job.max_len < 2 {
        return Err(Error::InvalidArgument("the maximum length must be at least 2 tokens".into()));
    }
    let mut truncated = 0;
    let mut out = Vec::with_capacity(job.records.len());
    for r in &job.records {
        let e = encode(tokenizer, template, job.style, r, job.mask_instructions, job.max_len)?;
        truncated += usize::from(e.truncated);
        out.push(e.example);
    }
    Ok((out, truncated))
}

/// One step as the run reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainProgress {
    pub report: StepReport,
    /// The validation loss, at checkpoints.
    pub val_loss: Option<f32>,
    pub tokens_per_second: f64,
    pub seconds_left: f64,
}

/// A stored checkpoint, as the Train view offers it for resuming.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// The run's name.
    pub name: String,
    pub step: u64,
    pub total_steps: u64,
    /// The model it was made on (its card's name), and its losses so far (step, train loss, validation loss).
    pub model: String,
    pub losses: Vec<(u64, f32, Option<f32>)>,
}
