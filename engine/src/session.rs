//! Generation: prefill the prompt in one batched pass, then decode token by token with the sampler, streaming text
//! that never splits a character, until a stop token, a stop string, the token budget or a cancel.

use crate::backend::{Backend, SamplingLogits};
use crate::model::{Cache, Transformer};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{Detokenizer, Tokenizer};
use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Extra stop tokens besides the model's end-of-turn/eos ids.
    pub stop_tokens: Vec<u32>,
    pub stop_strings: Vec<String>,
    /// Whether the model's own eos/end-of-turn ids stop generation.
    pub stop_at_eos: bool,
    /// How many of the likeliest tokens to report with each generated token (0 = none, as the CLI wants); see
    /// [`TokenInfo`].
    #[serde(default)]
    pub candidates: usize,
    /// The LoRA adapters (by the id the worker gave them) and scales this generation applies; empty = the base.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lora: Vec<LoraChoice>,
}

/// One active adapter of a request.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraChoice {
    pub id: u64,
    pub scale: f32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop_tokens: vec![],
            stop_strings: vec![],
            stop_at_eos: true,
            candidates: 0,
            lora: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StopReason {
    StopToken,
    StopString,
    MaxTokens,
    ContextFull,
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub prompt_tokens: usize,
    /// Prompt tokens actually run (the rest were already in the cache).
    pub prefilled_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub time_to_first_token_ms: f64,
    /// Device work of the decode steps (every token after the first), zero on the CPU.
    pub decode_counters: crate::backend::Counters,
}

impl Stats {
    pub fn prefill_tok_s(&self) -> f64 {
        rate(self.prefilled_tokens, self.prefill_ms)
    }

    /// Decode speed over the tokens after the first (the first comes from the prefill).
    pub fn decode_tok_s(&self) -> f64 {
        rate(self.generated_tokens.saturating_sub(1), self.decode_ms)
    }

    /// Decode steps run (the first token comes from the prefill's logits).
    pub fn decode_steps(&self) -> usize {
        self.generated_tokens.saturating_sub(1)
    }
}

fn rate(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    /// Generated ids, without the stop token.
    pub tokens: Vec<u32>,
    pub text: String,
    pub stop_reason: StopReason,
    pub stats: Stats,
}

/// One of the likeliest tokens at a generation step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    pub token: u32,
    /// The token's own text (a byte token alone may decode to U+FFFD).
    pub text: String,
    /// Softmax probability of its logit (temperature 1, before any penalty) over the `support` logits.
    pub p: f32,
}

/// What generation knew when it picked a token: the likeliest tokens at that step, best first.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenInfo {
    pub candidates: Vec<Candidate>,
    /// How many logits the probabilities are normalised over: the whole vocabulary (CPU), or only the top-k a GPU
    /// backend reads back, in which case they are shares of those and slightly overstate the true probabilities.
    pub support: usize,
}

/// The `n` likeliest tokens of `logits` with their softmax probabilities over all of `logits`, best first (equal
/// logits by lower id, as the sampler breaks ties), and how many logits that softmax covered. NaN counts as -inf.
pub fn top_candidates(logits: &SamplingLogits, n: usize) -> (Vec<(u32, f32)>, usize) {
    let pairs: Vec<(u32, f32)> = match logits {
        SamplingLogits::Full(row) => row
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect(),
        SamplingLogits::Candidates(c) => c.clone(),
    };
    let clean = |l: f32| if l.is_nan() { f32::NEG_INFINITY } else { l };
    let max = pairs
        .iter()
        .map(|p| clean(p.1))
        .fold(f32::NEG_INFINITY, f32::max);
    if pairs.is_empty() || max == f32::NEG_INFINITY {
        return (Vec::new(), pairs.len());
    }
    let total: f64 = pairs
        .iter()
        .map(|p| (clean(p.1) as f64 - max as f64).exp())
        .sum();
    let mut best = pairs.clone();
    let by_logit =
        |a: &(u32, f32), b: &(u32, f32)| clean(b.1).total_cmp(&clean(a.1)).then(a.0.cmp(&b.0));
    let n = n.min(best.len());
    if n == 0 {
        return (Vec::new(), pairs.len());
    }
    if n < best.len() {
        best.select_nth_unstable_by(n - 1, by_logit);
        best.truncate(n);
    }
    best.sort_unstable_by(by_logit);
    let out = best
        .into_iter()
        .map(|(t, l)| (t, ((clean(l) as f64 - max as f64).exp() / total) as f32))
        .collect();
    (out, pairs.len())
}

/// Milliseconds from an arbitrary origin.
pub type Clock = fn() -> f64;

/// A future a session awaits between units of work (see [`Session::yield_hook`]).
pub type YieldHook = Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>;

#[cfg(not(target_arch = "wasm32"))]
pub fn default_clock() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
}

/// Wall-clock milliseconds (Date.now works in pages and workers alike; callers may pass `performance.now`).
#[cfg(target_arch = "wasm32")]
pub fn default_clock() -> f64 {
    js_sys::Date::now()
}

/// A conversation with one model on one backend: owns the KV cache and remembers which tokens it holds, so a
/// prompt that extends the previous one only runs its new tokens.
pub struct Session<'m, B: Backend> {
    backend: &'m B,
    model: &'m Transformer<B>,
    tokenizer: Option<&'m Tokenizer>,
    cache: Cache<B>,
    /// Tokens whose keys/values are in the cache, in order.
    cached: Vec<u32>,
    cancel: Arc<AtomicBool>,
    pub clock: Clock,
    /// Awaited before each token is sampled (the first after the prefill, each later one after its decode step) and
    /// between prefill chunks. A backend whose futures are always ready (the CPU) otherwise runs a whole generation
    /// without giving a single-threaded host (a browser worker) a turn of its event loop, so it could never hear a
    /// cancel; the host sets a hook that yields to its event loop. None (the default) costs nothing.
    pub yield_hook: Option<YieldHook>,
}

impl<'m, B: Backend> Session<'m, B> {
    pub fn new(
        backend: &'m B,
        model: &'m Transformer<B>,
        tokenizer: Option<&'m Tokenizer>,
        max_positions: usize,
    ) -> Result<Self> {
        Ok(Self {
            backend,
            model,
            tokenizer,
            cache: model.new_cache(backend, max_positions)?,
            cached: Vec::new(),
            cancel: Arc::new(AtomicBool::new(false)),
            clock: default_clock,
            yield_hook: None,
        })
    }

    /// A flag another thread (or the UI) sets to stop the current generation at the next token.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    pub fn max_positions(&self) -> usize {
        self.cache.max_positions
    }

    /// Device work counted so far (dispatches, submits, readback, allocations); zero on the CPU.
    pub fn counters(&self) -> crate::backend::Counters {
        self.backend.counters()
    }

    /// The LoRA adapters (and scales) the next generations apply. A different set than the cache was computed under
    /// starts the cache again; the same set keeps it (switching back and forth costs one prefill, never a reload).
    pub fn set_lora(&mut self, lora: crate::lora::LoraStack<B>) -> Result<()> {
        if lora.key() != self.cache.lora.key() {
            self.reset()?;
            self.cache.lora = lora;
        }
        Ok(())
    }

    pub fn reset(&mut self) -> Result<()> {
        for c in &mut self.cache.layers {
            self.backend.reset_kv_cache(c)?;
        }
        self.cache.position = 0;
        self.cached.clear();
        Ok(())
    }

    /// Logits for every position of `tokens`, from an empty cache.
    pub async fn logits(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        self.reset()?;
        let mut rows = Vec::with_capacity(tokens.len());
        for chunk in tokens.chunks(self.model.max_rows_per_forward(self.backend)) {
            let out = self
                .model
                .forward(self.backend, &mut self.cache, chunk, true)?;
            self.cached.extend_from_slice(chunk);
            rows.extend(self.backend.to_host(&out).await?);
        }
        Ok(rows)
    }

    /// Makes the cache hold exactly `prompt` and returns the last position's logits.
    async fn prefill(&mut self, prompt: &[u32]) -> Result<(SamplingLogits, usize)> {
        let reuse = self.cached.len() < prompt.len() && prompt.starts_with(&self.cached);
        if !reuse {
            self.reset()?;
        }
        let new = prompt[self.cached.len()..].to_vec();
        let chunk_rows = self.model.max_rows_per_forward(self.backend);
        let mut last = None;
        for chunk in new.chunks(chunk_rows) {
            if last.is_some() {
                self.yield_now().await;
            }
            last = Some(
                self.model
                    .forward(self.backend, &mut self.cache, chunk, false)?,
            );
            self.cached.extend_from_slice(chunk);
        }
        let out = last.ok_or_else(|| Error::Backend("no logits".into()))?;
        Ok((self.backend.sampling_logits(&out).await?, new.len()))
    }

    async fn yield_now(&self) {
        if let Some(hook) = &self.yield_hook {
            hook().await;
        }
    }

    async fn step(&mut self, token: u32) -> Result<SamplingLogits> {
        let out = self
            .model
            .forward(self.backend, &mut self.cache, &[token], false)?;
        self.cached.push(token);
        self.backend.sampling_logits(&out).await
    }

    /// Generates after `prompt`; `on_text` receives each newly completed piece of text as it streams.
    pub async fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_text: &mut dyn FnMut(u32, &str),
    ) -> Result<Generation> {
        self.generate_with_info(prompt, options, &mut |token, text, _| on_text(token, text))
            .await
    }

    /// [`Session::generate`], with the [`TokenInfo`] of the token that completed each piece when
    /// `options.candidates` asks for it (None otherwise, and for the text flushed at the end).
    pub async fn generate_with_info(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_text: &mut dyn FnMut(u32, &str, Option<&TokenInfo>),
    ) -> Result<Generation> {
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("the prompt has no tokens".into()));
        }
        self.cancel.store(false, Ordering::Relaxed);
        let mut sampler = Sampler::new(options.sampling.clone())?;
        let mut stop_ids = options.stop_tokens.clone();
        if options.stop_at_eos {
            stop_ids.extend(self.model.config.eos_token_ids.iter().copied());
            if let Some(t) = self.tokenizer {
                stop_ids.extend(t.eos_ids().iter().copied());
            }
        }
        let mut detok = self.tokenizer.map(|t| Detokenizer::continuing(t, true));
        let mut stats = Stats {
            prompt_tokens: prompt.len(),
            ..Stats::default()
        };
        let mut history: Vec<u32> = prompt.to_vec();
        let mut tokens = Vec::new();
        let mut text = String::new();
        let mut emitted = 0usize;

        let t0 = (self.clock)();
        let (mut logits, prefilled) = self.prefill(prompt).await?;
        stats.prefilled_tokens = prefilled;
        let t_prefill = (self.clock)();
        let counters_before = self.backend.counters();
        stats.prefill_ms = t_prefill - t0;

        let stop_reason = loop {
            self.yield_now().await;
            if self.cancel.load(Ordering::Relaxed) {
                break StopReason::Cancelled;
            }
            if tokens.len() >= options.max_tokens {
                break StopReason::MaxTokens;
            }
            let token = sampler.sample_from(&logits, &history);
            if tokens.is_empty() {
                stats.time_to_first_token_ms = (self.clock)() - t0;
            }
            if stop_ids.contains(&token) {
                break StopReason::StopToken;
            }
            tokens.push(token);
            history.push(token);
            let info =
                (options.candidates > 0).then(|| self.token_info(&logits, options.candidates));
            if let Some(d) = detok.as_mut() {
                text.push_str(&d.push(token)?);
            }
            if let Some(cut) = earliest_stop(&text, &options.stop_strings) {
                text.truncate(cut);
                if cut > emitted {
                    on_text(token, &text[emitted..], info.as_ref());
                }
                emitted = text.len();
                break StopReason::StopString;
            }
            // Hold back text that may be the start of a stop string.
            let safe = text.len() - held_back(&text, &options.stop_strings);
            if safe > emitted || detok.is_none() {
                on_text(token, &text[emitted..safe], info.as_ref());
                emitted = safe;
            }
            if tokens.len() >= options.max_tokens {
                break StopReason::MaxTokens;
            }
            if self.cache.position + 1 > self.cache.max_positions {
                break StopReason::ContextFull;
            }
            logits = self.step(token).await?;
        };
        if let Some(d) = detok.as_mut() {
            if stop_reason != StopReason::StopString {
                text.push_str(&d.finish()?);
            }
        }
        if text.len() > emitted && stop_reason != StopReason::StopString {
            on_text(tokens.last().copied().unwrap_or(0), &text[emitted..], None);
        }
        stats.generated_tokens = tokens.len();
        stats.decode_ms = (self.clock)() - t_prefill;
        stats.decode_counters = self.backend.counters().since(&counters_before);
        Ok(Generation {
            tokens,
            text,
            stop_reason,
            stats,
        })
    }

    fn token_info(&self, logits: &SamplingLogits, n: usize) -> TokenInfo {
        let (best, support) = top_candidates(logits, n);
        let text = |t: u32| {
            self.tokenizer
                .and_then(|k| k.decode(&[t], false).ok())
                .unwrap_or_default()
        };
        TokenInfo {
            candidates: best
                .into_iter()
                .map(|(token, p)| Candidate {
                    token,
                    text: text(token),
                    p,
                })
                .collect(),
            support,
        }
    }
}

/// Byte index where the first stop string starts, if any is in `text`.
fn earliest_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// Length of the longest suffix of `text` that is a proper prefix of some stop string (kept unsent until resolved).
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut keep = 0;
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            if i > keep && text.ends_with(&s[..i]) {
                keep = i;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax computed the plain way, in f64, over every logit.
    fn softmax(row: &[f32]) -> Vec<f64> {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l)) as f64;
        let e: Vec<f64> = row.iter().map(|&l| (l as f64 - max).exp()).collect();
        let total: f64 = e.iter().sum();
        e.into_iter().map(|x| x / total).collect()
    }

    #[test]
    fn candidates_are_the_softmax_of_the_logits_best_first() {
        let row = vec![0.5, 3.0, -1.0, 2.0, 3.0, f32::NAN, 1.5];
        let p = softmax(
            &row.iter()
                .map(|&l| if l.is_nan() { f32::NEG_INFINITY } else { l })
                .collect::<Vec<_>>(),
        );
        let (best, support) = top_candidates(&SamplingLogits::Full(row.clone()), 4);
        assert_eq!(support, row.len());
        // Ties (ids 1 and 4) go to the lower id, as the sampler breaks them.
        assert_eq!(
            best.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![1, 4, 3, 6]
        );
        for (id, prob) in &best {
            assert!(
                (*prob as f64 - p[*id as usize]).abs() < 1e-6,
                "token {id}: {prob} vs {}",
                p[*id as usize]
            );
        }
        assert!(best.windows(2).all(|w| w[0].1 >= w[1].1));
        // Asking for more than there are gives them all, summing to 1.
        let (all, _) = top_candidates(&SamplingLogits::Full(row.clone()), 100);
        assert_eq!(all.len(), row.len());
        assert!((all.iter().map(|c| c.1 as f64).sum::<f64>() - 1.0).abs() < 1e-5);
        assert!(top_candidates(&SamplingLogits::Full(vec![]), 3)
            .0
            .is_empty());
        assert!(top_candidates(&SamplingLogits::Full(row), 0).0.is_empty());
    }

    #[test]
    fn gpu_candidates_are_shares_of_the_top_k() {
        // A GPU backend hands over only its top-k, in its own order: the probabilities are normalised over those.
        let c = vec![(7, 1.0), (9, 2.0), (3, 0.0)];
        let (best, support) = top_candidates(&SamplingLogits::Candidates(c), 2);
        assert_eq!(support, 3);
        let p = softmax(&[2.0, 1.0, 0.0]);
        assert_eq!(best.iter().map(|c| c.0).collect::<Vec<_>>(), vec![9, 7]);
        assert!((best[0].1 as f64 - p[0]).abs() < 1e-6 && (best[1].1 as f64 - p[1]).abs() < 1e-6);
    }

    #[test]
    fn under_greedy_the_first_candidate_is_the_token_chosen() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut sampler = Sampler::new(SamplingParams::default()).unwrap();
        for _ in 0..50 {
            let row: Vec<f32> = (0..1000).map(|_| rng.random_range(-10.0..10.0)).collect();
            let logits = SamplingLogits::Full(row);
            let chosen = sampler.sample_from(&logits, &[]);
            assert_eq!(top_candidates(&logits, 5).0[0].0, chosen);
        }
    }

    #[test]
    fn held_back_keeps_partial_stop_strings() {
        let stops = vec!["</END>".to_string()];
        assert_eq!(held_back("answer </E", &stops), 3);
        assert_eq!(held_back("answer", &stops), 0);
        assert_eq!(earliest_stop("a</END>b", &stops), Some(1));
    }

    /// The yield hook is awaited once per generated token, and a cancel raised while it runs (as a worker's message
    /// handler does when the hook lets it run) stops the generation before the next token.
    #[test]
    fn the_yield_hook_runs_once_per_token_and_lets_a_cancel_in() {
        use crate::backend::cpu::CpuBackend;
        use crate::model::ModelFiles;
        use std::cell::Cell;
        use std::rc::Rc;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tiny/llama/model-f32.gguf");
        let files = ModelFiles::open(&path).expect("the tiny Llama fixture");
        let backend = CpuBackend::new();
        let model =
            futures::executor::block_on(files.load(&backend, &mut |_, _| {})).expect("load");
        let mut session = Session::new(&backend, &model, None, 64).expect("session");
        let options = GenerateOptions {
            max_tokens: 7,
            stop_at_eos: false,
            ..Default::default()
        };
        let prompt = [1, 5, 9, 13];

        let calls = Rc::new(Cell::new(0usize));
        let counter = calls.clone();
        session.yield_hook = Some(Box::new(move || {
            counter.set(counter.get() + 1);
            Box::pin(async {})
        }));
        let g = futures::executor::block_on(session.generate(&prompt, &options, &mut |_, _| {}))
            .expect("generate");
        assert_eq!(g.tokens.len(), 7);
        assert_eq!(calls.get(), g.tokens.len(), "one yield per generated token");

        let cancel = session.cancel_flag();
        let calls = Rc::new(Cell::new(0usize));
        let counter = calls.clone();
        session.yield_hook = Some(Box::new(move || {
            counter.set(counter.get() + 1);
            if counter.get() == 3 {
                cancel.store(true, Ordering::Relaxed);
            }
            Box::pin(async {})
        }));
        session.reset().expect("reset");
        let g = futures::executor::block_on(session.generate(&prompt, &options, &mut |_, _| {}))
            .expect("generate");
        assert_eq!(g.stop_reason, StopReason::Cancelled);
        assert_eq!(
            g.tokens.len(),
            2,
            "the cancel raised in the third yield stops before the third token"
        );
    }
}
