//! Magpie: an aligned model given only the pre-query part of its chat template writes a user's instruction; the same
//! model answers it through the full template. Each sample is a [`Task`] of 2 × turns generations run by the
//! [`BatchRunner`]; its seeds derive from (seed, sample index, turn, attempt), so a row depends only on those and the
//! settings. Judge tags come from a second pass of [`JudgeTask`]s.

use crate::batch::{BatchRunner, BatchStats, StepOutput, StepRequest, Task};
use crate::backend::Backend;
use crate::chat::{ChatTemplate, Message};
use crate::sampling::SamplingParams;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use dataset::{GenInputConfigs, Row, Tags, Turn};
use std::collections::BTreeMap;

/// Sampling of one of the two steps.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepSettings {
    /// 0 = greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MagpieSettings {
    pub seed: u64,
    /// Instruction–response rounds per row (at least 1).
    pub turns: u32,
    /// What the instruction step continues from: derived from the chat template (see [`pre_query_template`]),
    /// shown to the user and editable.
    pub pre_query_template: String,
    pub system_prompt: Option<String>,
    pub instruction: StepSettings,
    pub response: StepSettings,
    /// Keep only the instruction's first line (the Magpie paper's default).
    pub stop_at_newline: bool,
    /// Strip "Task:"-like labels and cut at "Answer:".
    pub sanitize: bool,
    /// The model's name as rows record it.
    pub model: String,
}

impl Default for MagpieSettings {
    fn default() -> Self {
        Self {
            seed: 0,
            turns: 1,
            pre_query_template: String::new(),
            system_prompt: None,
            instruction: StepSettings { temperature: 1.0, top_p: 1.0, max_tokens: 128 },
            response: StepSettings { temperature: 0.0, top_p: 1.0, max_tokens: 512 },
            stop_at_newline: false,
            sanitize: false,
            model: String::new(),
        }
    }
}

impl MagpieSettings {
    pub fn validate(&self) -> Result<()> {
        if self.turns == 0 || self.turns > 16 {
            return Err(Error::InvalidArgument(format!("{} turns (1 to 16)", self.turns)));
        }
        if self.pre_query_template.is_empty() {
            return Err(Error::InvalidArgument("the pre-query template is empty".into()));
        }
        for (step, s) in [("instruction", &self.instruction), ("response", &self.response)] {
            if s.max_tokens == 0 {
                return Err(Error::InvalidArgument(format!("the {step} step may generate 0 tokens")));
            }
            sampling(s, 0).validate()?;
        }
        Ok(())
    }

    /// Positions a batch slot needs for one row: every turn's prompt and both steps' tokens, with room for the
    /// template's own tokens around each message.
    pub fn context_needed(&self, pre_query_tokens: usize) -> usize {
        const TEMPLATE_TOKENS_PER_TURN: usize = 48;
        let per_turn = self.instruction.max_tokens + self.response.max_tokens + TEMPLATE_TOKENS_PER_TURN;
        pre_query_tokens + self.turns as usize * per_turn
    }

    /// What every row made with these settings records (its sample index set per row).
    pub fn configs(&self, sample_index: u64) -> GenInputConfigs {
        GenInputConfigs {
            temperature: self.instruction.temperature,
            top_p: self.instruction.top_p,
            response_temperature: self.response.temperature,
            response_top_p: self.response.top_p,
            seed: self.seed,
            sample_index,
            turns: self.turns,
            pre_query_template: self.pre_query_template.clone(),
            system_prompt: self.system_prompt.clone(),
            model: self.model.clone(),
            engine_version: ENGINE_VERSION.to_string(),
            stop_at_newline: self.stop_at_newline,
            sanitize: self.sanitize,
            max_tokens: self.response.max_tokens as u32,
            ins_max_tokens: self.instruction.max_tokens as u32,
        }
    }
}

pub const ENGINE_VERSION: &str = concat!("aviary ", env!("CARGO_PKG_VERSION"));

/// Built-in system prompts that steer Magpie towards a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemPreset {
    Math,
    Code,
    Translation,
    Writing,
}

impl SystemPreset {
    pub const ALL: [SystemPreset; 4] = [Self::Math, Self::Code, Self::Translation, Self::Writing];

    pub fn name(self) -> &'static str {
        match self {
            Self::Math => "math",
            Self::Code => "code",
            Self::Translation => "translation",
            Self::Writing => "writing",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// The math prompt is the Magpie authors'; the others follow its shape.
    pub fn text(self) -> &'static str {
        match self {
            Self::Math => "You are an AI assistant designed to provide helpful, step-by-step guidance on solving math problems. The user will ask you a wide range of complex mathematical questions.\nYour purpose is to assist users in understanding mathematical concepts, working through equations, and arriving at the correct solutions.",
            Self::Code => "You are an AI assistant designed to help with programming tasks. The user will ask you to write, explain, review and debug code in a wide range of programming languages.\nYour purpose is to give correct, idiomatic code with clear explanations.",
            Self::Translation => "You are an AI assistant specialized in translation. The user will ask you to translate texts between languages and to explain nuances of wording.\nYour purpose is to give faithful, fluent translations.",
            Self::Writing => "You are an AI assistant designed to help with writing. The user will ask you to draft, edit, shorten and improve texts of many kinds.\nYour purpose is to help users write clearly and well.",
        }
    }
}

/// The pre-query template of `template` after an optional system prompt, with a message that says what to do when
/// it cannot be derived.
pub fn pre_query_template(template: &ChatTemplate, system: Option<&str>) -> Result<String> {
    template.pre_query(system).map_err(|e| {
        Error::Template(format!(
            "the pre-query template cannot be derived from this model's chat template ({e}); type one instead"
        ))
    })
}

/// Renders `messages`; a template that refuses the system role (Gemma 2) gets the system prompt at the head of the
/// first user message instead, as Gemma 3's template does itself.
fn render(template: &ChatTemplate, messages: &[Message], generation_prompt: bool) -> Result<String> {
    with_system_fallback(messages, |m| template.render(m, generation_prompt))
}

/// `history` and the start of the next user turn (see [`ChatTemplate::next_query`]), with the same fallback.
fn next_query(template: &ChatTemplate, history: &[Message]) -> Result<String> {
    with_system_fallback(history, |m| template.next_query(m))
}

fn with_system_fallback(messages: &[Message], f: impl Fn(&[Message]) -> Result<String>) -> Result<String> {
    match f(messages) {
        Err(Error::Template(_)) if messages.first().is_some_and(|m| m.role == "system") => {
            let mut merged = messages[1..].to_vec();
            if let Some(first) = merged.first_mut() {
                first.content = format!("{}\n\n{}", messages[0].content, first.content);
            }
            f(&merged)
        }
        other => other,
    }
}

/// What every Magpie task of a run shares.
pub struct MagpieContext<'a> {
    pub template: &'a ChatTemplate,
    pub tokenizer: &'a Tokenizer,
    pub settings: MagpieSettings,
}

/// Tries per turn before a row keeps an empty instruction or response (the filters then drop it).
const MAX_ATTEMPTS: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Instruction,
    Response,
    Done,
}

/// One Magpie sample: instruction, response, repeated for every turn.
pub struct MagpieTask<'a> {
    ctx: &'a MagpieContext<'a>,
    pub sample_index: u64,
    /// System prompt (when any), then user and assistant turns.
    conversation: Vec<Message>,
    turn: u32,
    attempt: u32,
    phase: Phase,
}

impl<'a> MagpieTask<'a> {
    pub fn new(ctx: &'a MagpieContext<'a>, sample_index: u64) -> Self {
        Self {
            ctx,
            sample_index,
            conversation: ctx.settings.system_prompt.iter().map(Message::system).collect(),
            turn: 0,
            attempt: 0,
            phase: Phase::Instruction,
        }
    }

    /// The finished row (None before the task is done).
    pub fn row(&self) -> Option<Row> {
        if self.phase != Phase::Done {
            return None;
        }
        let conversations = self
            .conversation
            .iter()
            .filter(|m| m.role != "system")
            .map(|m| Turn {
                from: if m.role == "user" { "human" } else { "gpt" }.to_string(),
                value: m.content.clone(),
            })
            .collect();
        Some(Row::new(conversations, self.ctx.settings.configs(self.sample_index)))
    }

    fn seed(&self, step: u64) -> u64 {
        let s = &self.ctx.settings;
        mix(&[s.seed, self.sample_index, self.turn as u64, self.attempt as u64, step])
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        // The template text carries BOS itself where the model wants one.
        self.ctx.tokenizer.encode(text, false)
    }

    /// Starts this turn over with the next attempt's seeds, or gives up and keeps what there is.
    fn retry(&mut self, content: String, role: &str) {
        if self.attempt + 1 < MAX_ATTEMPTS {
            self.attempt += 1;
            self.phase = Phase::Instruction;
            if role == "assistant" {
                self.conversation.pop();
            }
        } else {
            self.conversation.push(Message::new(role, content));
            self.advance_after(role);
        }
    }

    fn advance_after(&mut self, role: &str) {
        self.phase = match role {
            "user" => Phase::Response,
            _ if self.turn + 1 < self.ctx.settings.turns => {
                self.turn += 1;
                self.attempt = 0;
                Phase::Instruction
            }
            _ => Phase::Done,
        };
    }
}

impl Task for MagpieTask<'_> {
    fn next_step(&mut self) -> Result<Option<StepRequest>> {
        let s = &self.ctx.settings;
        Ok(Some(match self.phase {
            Phase::Done => return Ok(None),
            Phase::Instruction => {
                let text = if self.turn == 0 {
                    s.pre_query_template.clone()
                } else {
                    next_query(self.ctx.template, &self.conversation)?
                };
                StepRequest {
                    prompt: self.encode(&text)?,
                    sampling: SamplingParams { seed: self.seed(0), ..sampling(&s.instruction, 0) },
                    max_tokens: s.instruction.max_tokens,
                    stop_at_newline: s.stop_at_newline,
                    stop_after: Vec::new(),
                }
            }
            Phase::Response => {
                let text = render(self.ctx.template, &self.conversation, true)?;
                StepRequest {
                    prompt: self.encode(&text)?,
                    sampling: SamplingParams { seed: self.seed(1), ..sampling(&s.response, 0) },
                    max_tokens: s.response.max_tokens,
                    stop_at_newline: false,
                    stop_after: Vec::new(),
                }
            }
        }))
    }

    fn step_done(&mut self, out: StepOutput) -> Result<()> {
        let s = &self.ctx.settings;
        match self.phase {
            Phase::Instruction => {
                let mut text = out.text.as_str();
                if s.stop_at_newline {
                    text = dataset::sanitize::cut_at_newline(text);
                }
                let mut text = text.trim().to_string();
                if s.sanitize {
                    text = dataset::sanitize::sanitize_instruction(&text);
                }
                if text.is_empty() || dataset::sanitize::has_template_tokens(&text) {
                    self.retry(text, "user");
                } else {
                    self.conversation.push(Message::user(text));
                    self.advance_after("user");
                }
            }
            Phase::Response => {
                let text = out.text.trim().to_string();
                if text.is_empty() || dataset::sanitize::has_template_tokens(&text) {
                    self.retry(text, "assistant");
                } else {
                    self.conversation.push(Message::assistant(text));
                    self.advance_after("assistant");
                }
            }
            Phase::Done => {}
        }
        Ok(())
    }
}

fn sampling(s: &StepSettings, seed: u64) -> SamplingParams {
    SamplingParams { temperature: s.temperature, top_p: s.top_p, seed, ..SamplingParams::default() }
}

/// A seed from several numbers (splitmix64 over each in turn): nearby sample indices give unrelated streams.
fn mix(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x6a09_e667_f3bc_c908;
    for &p in parts {
        h ^= p;
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h = z ^ (z >> 31);
    }
    h
}

/// Sample indices `0..n` that shard `index` of `count` makes: every count-th, starting at `index`. The shards of a
/// run are disjoint and together make the unsharded run, row for row (a row depends only on its index).
pub fn shard_indices(n: u64, index: u64, count: u64) -> Result<impl Iterator<Item = u64>> {
    if count == 0 || index >= count {
        return Err(Error::InvalidArgument(format!(
            "shard {index}/{count}: the shard index must be below the shard count"
        )));
    }
    Ok((index..n).step_by(count as usize))
}

/// Runs Magpie over `samples`, handing out rows in the order of `samples` (each as soon as every earlier one is
/// out). A cancelled run hands out what it finished, in that order, and returns.
pub async fn generate<'c, B: Backend>(
    runner: &mut BatchRunner<'_, B, MagpieTask<'c>>,
    ctx: &'c MagpieContext<'c>,
    samples: &[u64],
    on_row: &mut dyn FnMut(Row, &BatchStats) -> Result<()>,
) -> Result<BatchStats> {
    ctx.settings.validate()?;
    let tasks: Vec<MagpieTask> = samples.iter().map(|&i| MagpieTask::new(ctx, i)).collect();
    in_order(runner, tasks, &mut |task| task.row(), on_row).await
}

/// Runs `tasks`, passing `output(task)` of each to `on_item` in task order.
pub(crate) async fn in_order<B: Backend, T: Task, I>(
    runner: &mut BatchRunner<'_, B, T>,
    tasks: Vec<T>,
    output: &mut dyn FnMut(&T) -> Option<I>,
    on_item: &mut dyn FnMut(I, &BatchStats) -> Result<()>,
) -> Result<BatchStats> {
    let mut waiting: BTreeMap<usize, Option<I>> = BTreeMap::new();
    let mut next = 0usize;
    let mut last = BatchStats::default();
    let stats = runner
        .run(tasks, &mut |index, task, stats| {
            waiting.insert(index, output(&task));
            last = *stats;
            while let Some(item) = waiting.remove(&next) {
                next += 1;
                if let Some(item) = item {
                    on_item(item, stats)?;
                }
            }
            Ok(())
        })
        .await?;
    // Cancelled: what finished after a gap still goes out, in order.
    for (_, item) in std::mem::take(&mut waiting) {
        if let Some(item) = item {
            on_item(item, &last)?;
        }
    }
    Ok(stats)
}

/// Tags one row with the loaded model as judge: greedy, the answer prefilled with "{".
pub struct JudgeTask {
    prompt: Vec<u32>,
    pub tags: Option<Tags>,
    done: bool,
}

impl JudgeTask {
    pub fn new(template: &ChatTemplate, tokenizer: &Tokenizer, instruction: &str) -> Result<Self> {
        let question = dataset::judge::judge_prompt(instruction);
        let mut text = render(template, &[Message::user(question)], true)?;
        text.push_str(dataset::judge::JUDGE_PREFILL);
        Ok(Self { prompt: tokenizer.encode(&text, false)?, tags: None, done: false })
    }
}

/// Positions a judge call needs: its prompt (the instruction and the rating instructions) and a short answer.
pub const JUDGE_CONTEXT: usize = 1024;

/// Tokens a judge answer may take ({"difficulty": …, "input_quality": …, "task_category": …}).
const JUDGE_MAX_TOKENS: usize = 64;

impl Task for JudgeTask {
    fn next_step(&mut self) -> Result<Option<StepRequest>> {
        if self.done {
            return Ok(None);
        }
        Ok(Some(StepRequest {
            prompt: self.prompt.clone(),
            sampling: SamplingParams { temperature: 0.0, ..SamplingParams::default() },
            max_tokens: JUDGE_MAX_TOKENS,
            stop_at_newline: false,
            stop_after: vec!["}".into()],
        }))
    }

    fn step_done(&mut self, out: StepOutput) -> Result<()> {
        self.done = true;
        // A malformed answer leaves the tags empty; the run goes on.
        self.tags = dataset::judge::parse_judge(&out.text);
        Ok(())
    }
}

/// Judges every row's first instruction and writes the tags into the rows (empty where the answer was unreadable).
/// `on_tagged(row index, tags)` hears each one in order.
pub async fn judge<B: Backend>(
    runner: &mut BatchRunner<'_, B, JudgeTask>,
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    rows: &mut [Row],
    on_tagged: &mut dyn FnMut(usize, &Tags, &BatchStats) -> Result<()>,
) -> Result<BatchStats> {
    let tasks = rows
        .iter()
        .map(|r| JudgeTask::new(template, tokenizer, &r.instruction))
        .collect::<Result<Vec<_>>>()?;
    let mut index = 0usize;
    in_order(runner, tasks, &mut |t| Some(t.tags.clone().unwrap_or_default()), &mut |tags, stats| {
        if let Some(row) = rows.get_mut(index) {
            row.tags = tags;
            on_tagged(index, &row.tags, stats)?;
        }
        index += 1;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_by_every_part() {
        let base = mix(&[7, 0, 0, 0, 0]);
        for (i, parts) in [[8, 0, 0, 0, 0], [7, 1, 0, 0, 0], [7, 0, 1, 0, 0], [7, 0, 0, 1, 0], [7, 0, 0, 0, 1]]
            .iter()
            .enumerate()
        {
            assert_ne!(mix(parts), base, "part {i}");
        }
        assert_eq!(mix(&[7, 0, 0, 0, 0]), base);
    }

    #[test]
    fn shards_partition_the_samples() {
        let mut all: Vec<u64> = (0..3).flat_map(|i| shard_indices(10, i, 3).unwrap()).collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert!(shard_indices(10, 3, 3).is_err());
        assert!(shard_indices(10, 0, 0).is_err());
    }

    #[test]
    fn settings_are_checked() {
        let mut s = MagpieSettings { pre_query_template: "<|im_start|>user\n".into(), ..Default::default() };
        assert!(s.validate().is_ok());
        s.turns = 0;
        assert!(s.validate().is_err());
        s.turns = 1;
        s.instruction.top_p = 1.5;
        assert!(s.validate().is_err());
        s.instruction.top_p = 1.0;
        s.response.max_tokens = 0;
        assert!(s.validate().is_err());
        s.response.max_tokens = 8;
        s.pre_query_template.clear();
        assert!(s.validate().is_err());
    }

    #[test]
    fn presets_have_names_and_text() {
        for p in SystemPreset::ALL {
            assert_eq!(SystemPreset::from_name(p.name()), Some(p));
            assert!(p.text().len() > 50);
        }
    }
}
