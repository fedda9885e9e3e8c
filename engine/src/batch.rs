//! Many independent generations at once (Magpie samples, synthesis chunks, judge calls): B slots, each with its own
//! KV cache, position and stop state, decoded together — one forward pass over B rows per step. A slot whose task
//! finishes is refilled with the next task. Each task's tokens depend only on the task (its prompts and seeds),
//! never on which tasks share its step: prompts are prefilled slot by slot, decode steps go through
//! [`Transformer::forward_batch`], whose rows never mix.

use crate::backend::{Backend, SamplingLogits};
use crate::model::{Cache, Transformer};
use crate::sampling::{Sampler, SamplingParams};
use crate::session::{default_clock, Clock, StopReason, YieldHook};
use crate::tokenizer::{Detokenizer, Tokenizer};
use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One generation a task asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRequest {
    /// The whole sequence the generation continues (a slot reuses whatever prefix of it is already cached).
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Stop once the text holds a newline after something other than whitespace (Magpie's one-line instructions).
    pub stop_at_newline: bool,
    /// Stop right after any of these appear in the text (kept in the output).
    pub stop_after: Vec<String>,
}

/// What a generation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// Generated ids, without a stop token.
    pub tokens: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
}

/// A unit of work made of one or more generations, each decided after the previous one's output.
pub trait Task {
    /// The next generation, or None when the task is finished.
    fn next_step(&mut self) -> Result<Option<StepRequest>>;
    /// The output of the generation `next_step` asked for.
    fn step_done(&mut self, out: StepOutput) -> Result<()>;
}

/// Throughput of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchStats {
    pub tasks_done: usize,
    pub generated_tokens: usize,
    pub prefilled_tokens: usize,
    pub decode_steps: usize,
    /// Tokens run through batched decode steps (every row of every step), and the time those steps took: the
    /// decode throughput, apart from prefills.
    pub decode_tokens: usize,
    pub decode_ms: f64,
    pub elapsed_ms: f64,
}

impl BatchStats {
    pub fn tokens_per_second(&self) -> f64 {
        per_second(self.generated_tokens, self.elapsed_ms)
    }

    /// Aggregate tokens per second of the batched decode steps alone.
    pub fn decode_tokens_per_second(&self) -> f64 {
        per_second(self.decode_tokens, self.decode_ms)
    }

    pub fn tasks_per_minute(&self) -> f64 {
        per_second(self.tasks_done, self.elapsed_ms) * 60.0
    }
}

fn per_second(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

struct Active<'m, T> {
    /// Position of the task in the run's order.
    index: usize,
    task: T,
    request: StepRequest,
    sampler: Sampler,
    detok: Detokenizer<'m>,
    tokens: Vec<u32>,
    /// The prompt and the tokens generated so far (what a repetition penalty looks back over).
    history: Vec<u32>,
    text: String,
    /// The token sampled last, not yet run through the model.
    pending: Option<u32>,
}

struct Slot<'m, B: Backend, T> {
    cache: Cache<B>,
    /// Tokens whose keys and values the cache holds, in order.
    cached: Vec<u32>,
    active: Option<Active<'m, T>>,
}

/// Runs tasks `batch` at a time on one model.
pub struct BatchRunner<'m, B: Backend, T> {
    backend: &'m B,
    model: &'m Transformer<B>,
    tokenizer: &'m Tokenizer,
    slots: Vec<Slot<'m, B, T>>,
    stop_ids: Vec<u32>,
    cancel: Arc<AtomicBool>,
    pub clock: Clock,
    /// Awaited between steps, so a single-threaded host (a browser worker) hears a cancel (see `Session`).
    pub yield_hook: Option<YieldHook>,
}

impl<'m, B: Backend, T: Task> BatchRunner<'m, B, T> {
    /// `batch` slots of `max_positions` positions each.
    pub fn new(
        backend: &'m B,
        model: &'m Transformer<B>,
        tokenizer: &'m Tokenizer,
        batch: usize,
        max_positions: usize,
    ) -> Result<Self> {
        if batch == 0 || batch > MAX_BATCH {
            return Err(Error::InvalidArgument(format!(
                "a batch of {batch} rows (1 to {MAX_BATCH})"
            )));
        }
        let slots = (0..batch)
            .map(|_| {
                Ok(Slot {
                    cache: model.new_cache(backend, max_positions)?,
                    cached: Vec::new(),
                    active: None,
                })
            })
            .collect::<Result<_>>()?;
        let mut stop_ids = model.config.eos_token_ids.clone();
        stop_ids.extend(tokenizer.eos_ids().iter().copied());
        Ok(Self {
            backend,
            model,
            tokenizer,
            slots,
            stop_ids,
            cancel: Arc::new(AtomicBool::new(false)),
            clock: default_clock,
            yield_hook: None,
        })
    }

    /// Set it to stop the run after the current step; finished tasks have been handed out already.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Runs every task of `tasks`, handing each to `finished` with its position in `tasks` when it is done (in the
    /// order they finish). Stops early, without error, when cancelled: tasks in flight are dropped.
    pub async fn run(
        &mut self,
        tasks: impl IntoIterator<Item = T>,
        finished: &mut dyn FnMut(usize, T, &BatchStats) -> Result<()>,
    ) -> Result<BatchStats> {
        let t0 = (self.clock)();
        let mut stats = BatchStats::default();
        let mut queue = tasks.into_iter().enumerate();
        let mut exhausted = false;
        loop {
            self.yield_now().await;
            if self.cancel.load(Ordering::Relaxed) {
                break;
            }
            // Refill idle slots, in task order, and prefill what each new step asks for.
            for s in 0..self.slots.len() {
                while self.slots[s].active.is_none() && !exhausted {
                    match queue.next() {
                        Some((index, mut task)) => match task.next_step()? {
                            Some(request) => self.begin(s, index, task, request)?,
                            None => {
                                stats.tasks_done += 1;
                                stats.elapsed_ms = (self.clock)() - t0;
                                finished(index, task, &stats)?;
                            }
                        },
                        None => exhausted = true,
                    }
                }
                while self.slots[s]
                    .active
                    .as_ref()
                    .is_some_and(|a| a.pending.is_none())
                {
                    let logits = self.prefill(s, &mut stats).await?;
                    self.accept(s, &logits, &mut stats, t0, finished)?;
                    self.yield_now().await;
                }
            }
            let rows: Vec<usize> = (0..self.slots.len())
                .filter(|&s| {
                    self.slots[s]
                        .active
                        .as_ref()
                        .is_some_and(|a| a.pending.is_some())
                })
                .collect();
            if rows.is_empty() {
                if exhausted {
                    break;
                }
                continue;
            }
            let tokens: Vec<u32> = rows
                .iter()
                .filter_map(|&s| self.slots[s].active.as_ref().and_then(|a| a.pending))
                .collect();
            let step_start = (self.clock)();
            let logits = {
                let mut caches: Vec<&mut Cache<B>> = self
                    .slots
                    .iter_mut()
                    .enumerate()
                    .filter(|(s, _)| rows.contains(s))
                    .map(|(_, slot)| &mut slot.cache)
                    .collect();
                let out = self
                    .model
                    .forward_batch(self.backend, &mut caches, &tokens)?;
                self.backend.sampling_logits_rows(&out).await?
            };
            stats.decode_steps += 1;
            stats.decode_tokens += rows.len();
            stats.decode_ms += (self.clock)() - step_start;
            for ((&s, token), row) in rows.iter().zip(tokens).zip(logits) {
                self.slots[s].cached.push(token);
                if let Some(a) = self.slots[s].active.as_mut() {
                    a.pending = None;
                }
                self.accept(s, &row, &mut stats, t0, finished)?;
            }
        }
        for slot in &mut self.slots {
            slot.active = None;
        }
        stats.elapsed_ms = (self.clock)() - t0;
        Ok(stats)
    }

    fn begin(&mut self, s: usize, index: usize, task: T, request: StepRequest) -> Result<()> {
        if request.prompt.is_empty() {
            return Err(Error::InvalidArgument(
                "a generation step with an empty prompt".into(),
            ));
        }
        let sampler = Sampler::new(request.sampling.clone())?;
        self.slots[s].active = Some(Active {
            index,
            task,
            history: request.prompt.clone(),
            request,
            sampler,
            detok: Detokenizer::continuing(self.tokenizer, true),
            tokens: Vec::new(),
            text: String::new(),
            pending: None,
        });
        Ok(())
    }

    /// Makes slot `s`'s cache hold its step's prompt; returns the last position's logits.
    async fn prefill(&mut self, s: usize, stats: &mut BatchStats) -> Result<SamplingLogits> {
        let chunk_rows = self.model.max_rows_per_forward(self.backend);
        let slot = &mut self.slots[s];
        let Some(active) = slot.active.as_ref() else {
            return Err(Error::Backend("prefill of an idle slot".into()));
        };
        let prompt = &active.request.prompt;
        if prompt.len() > slot.cache.max_positions {
            return Err(Error::InvalidArgument(format!(
                "a prompt of {} tokens does not fit the {} positions of a batch slot",
                prompt.len(),
                slot.cache.max_positions
            )));
        }
        if !(slot.cached.len() < prompt.len() && prompt.starts_with(&slot.cached)) {
            for c in &mut slot.cache.layers {
                self.backend.reset_kv_cache(c)?;
            }
            slot.cache.position = 0;
            slot.cached.clear();
        }
        let new = prompt[slot.cached.len()..].to_vec();
        let mut last = None;
        for chunk in new.chunks(chunk_rows) {
            last = Some(
                self.model
                    .forward(self.backend, &mut slot.cache, chunk, false)?,
            );
            slot.cached.extend_from_slice(chunk);
        }
        stats.prefilled_tokens += new.len();
        let out = last.ok_or_else(|| Error::Backend("no logits".into()))?;
        self.backend.sampling_logits(&out).await
    }

    /// Samples slot `s`'s next token from `logits` and either queues it for the next decode step or ends the step
    /// (then the task's next step, or the task, begins).
    fn accept(
        &mut self,
        s: usize,
        logits: &SamplingLogits,
        stats: &mut BatchStats,
        t0: f64,
        finished: &mut dyn FnMut(usize, T, &BatchStats) -> Result<()>,
    ) -> Result<()> {
        let slot = &mut self.slots[s];
        let room = slot.cache.position < slot.cache.max_positions;
        let Some(a) = slot.active.as_mut() else {
            return Ok(());
        };
        let stop = if a.tokens.len() >= a.request.max_tokens {
            Some(StopReason::MaxTokens)
        } else {
            let token = a.sampler.sample_from(logits, &a.history);
            if self.stop_ids.contains(&token) {
                Some(StopReason::StopToken)
            } else {
                a.tokens.push(token);
                a.history.push(token);
                stats.generated_tokens += 1;
                a.text.push_str(&a.detok.push(token)?);
                let newline = a.request.stop_at_newline && a.text.trim_start().contains('\n');
                if newline || a.request.stop_after.iter().any(|x| a.text.contains(x.as_str())) {
                    Some(StopReason::StopString)
                } else if a.tokens.len() >= a.request.max_tokens {
                    Some(StopReason::MaxTokens)
                } else if !room {
                    Some(StopReason::ContextFull)
                } else {
                    a.pending = Some(token);
                    None
                }
            }
        };
        let Some(stop) = stop else {
            return Ok(());
        };
        let Some(mut a) = slot.active.take() else {
            return Ok(());
        };
        if stop != StopReason::StopString {
            a.text.push_str(&a.detok.finish()?);
        }
        a.task.step_done(StepOutput {
            tokens: a.tokens,
            text: a.text,
            stop,
        })?;
        match a.task.next_step()? {
            Some(request) => self.begin(s, a.index, a.task, request),
            None => {
                stats.tasks_done += 1;
                stats.elapsed_ms = (self.clock)() - t0;
                finished(a.index, a.task, stats)
            }
        }
    }

    async fn yield_now(&self) {
        if let Some(hook) = &self.yield_hook {
            hook().await;
        }
    }
}

/// The most rows one batch may hold.
pub const MAX_BATCH: usize = 64;
