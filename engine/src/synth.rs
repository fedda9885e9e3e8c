//! Instruction Pre-Training's synthesis: raw text cut into chunks by tokens, and for each chunk the loaded model writes
//! question–answer pairs about it (the paper's `<QUE> … <ANS> … </END>` format, parsed tolerantly). What cannot be
//! parsed stays visible in the chunk's result.

use crate::backend::Backend;
use crate::batch::{BatchRunner, BatchStats, StepOutput, StepRequest, Task};
use crate::chat::{ChatTemplate, Message};
use crate::magpie::in_order;
use crate::sampling::SamplingParams;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use dataset::synth::{QaPair, Parsed};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SynthSettings {
    /// Longest chunk of the raw text, in the model's tokens.
    pub chunk_tokens: usize,
    /// Pairs asked for per chunk.
    pub pairs: usize,
    /// 0 = greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub max_tokens: usize,
}

impl Default for SynthSettings {
    fn default() -> Self {
        Self { chunk_tokens: 384, pairs: 3, temperature: 0.0, top_p: 1.0, seed: 0, max_tokens: 512 }
    }
}

impl SynthSettings {
    /// Positions a batch slot needs: the prompt wraps a chunk in instructions (the chunk counted twice leaves room
    /// for them and for tokenisation differences), then the answer.
    pub fn context_needed(&self) -> usize {
        self.chunk_tokens * 2 + 256 + self.max_tokens
    }
}

/// Raw text given to synthesis at most (a whole book is fine; more is almost surely a mistake).
pub const MAX_INPUT_BYTES: usize = 16 << 20;

/// One chunk's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChunkResult {
    pub index: usize,
    pub chunk: String,
    pub pairs: Vec<QaPair>,
    /// Output the parser could not read as pairs, verbatim.
    pub unparsed: Vec<String>,
}

/// Splits `text` into chunks of at most `settings.chunk_tokens` tokens.
pub fn chunks(text: &str, tokenizer: &Tokenizer, settings: &SynthSettings) -> Result<Vec<String>> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{} MB of text is more than synthesis takes at once ({} MB); split the file",
            text.len() >> 20,
            MAX_INPUT_BYTES >> 20
        )));
    }
    if settings.chunk_tokens < 16 {
        return Err(Error::InvalidArgument("chunks of fewer than 16 tokens".into()));
    }
    let count = |s: &str| tokenizer.encode(s, false).map_or(s.len(), |ids| ids.len());
    Ok(dataset::synth::chunk_text(text, settings.chunk_tokens, &count))
}

pub struct SynthTask {
    index: usize,
    chunk: String,
    prompt: Vec<u32>,
    sampling: SamplingParams,
    max_tokens: usize,
    parsed: Option<Parsed>,
}

impl SynthTask {
    pub fn new(
        template: &ChatTemplate,
        tokenizer: &Tokenizer,
        settings: &SynthSettings,
        index: usize,
        chunk: String,
    ) -> Result<Self> {
        let question = dataset::synth::synth_prompt(&chunk, settings.pairs);
        let text = template.render(&[Message::user(question)], true)?;
        let sampling = SamplingParams {
            temperature: settings.temperature,
            top_p: settings.top_p,
            seed: settings.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ..SamplingParams::default()
        };
        sampling.validate()?;
        Ok(Self {
            index,
            chunk,
            prompt: tokenizer.encode(&text, false)?,
            sampling,
            max_tokens: settings.max_tokens,
            parsed: None,
        })
    }

    pub fn result(&self) -> Option<ChunkResult> {
        self.parsed.as_ref().map(|p| ChunkResult {
            index: self.index,
            chunk: self.chunk.clone(),
            pairs: p.pairs.clone(),
            unparsed: p.unparsed.clone(),
        })
    }
}

impl Task for SynthTask {
    fn next_step(&mut self) -> Result<Option<StepRequest>> {
        if self.parsed.is_some() {
            return Ok(None);
        }
        Ok(Some(StepRequest {
            prompt: self.prompt.clone(),
            sampling: self.sampling.clone(),
            max_tokens: self.max_tokens,
            stop_at_newline: false,
            stop_after: Vec::new(),
        }))
    }

    fn step_done(&mut self, out: StepOutput) -> Result<()> {
        self.parsed = Some(dataset::synth::parse_pairs(&out.text));
        Ok(())
    }
}

/// Synthesises pairs for every chunk, handing out results in chunk order.
pub async fn synthesize<B: Backend>(
    runner: &mut BatchRunner<'_, B, SynthTask>,
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    settings: &SynthSettings,
    chunks: Vec<String>,
    on_chunk: &mut dyn FnMut(ChunkResult, &BatchStats) -> Result<()>,
) -> Result<BatchStats> {
    let tasks = chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| SynthTask::new(template, tokenizer, settings, i, c))
        .collect::<Result<Vec<_>>>()?;
    in_order(runner, tasks, &mut |t| t.result(), on_chunk).await
}
