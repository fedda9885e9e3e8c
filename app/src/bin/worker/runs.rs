//! Batch runs on the loaded model — Magpie rows, judge tags, synthesis chunks — through the engine's `BatchRunner`,
//! each result posted as soon as it is finished and `BatchDone` at the end. A run's cancel flag is registered in
//! `Shared`, so `Cancel` stops it after the current step; what finished before has been posted.

use super::{event_loop_yield, Loaded, Registered, Shared};
use aviary_app::run_rules;
use engine::backend::Backend;
use engine::batch::{BatchRunner, BatchStats, Task};
use engine::chat::ChatTemplate;
use engine::magpie::{self, JudgeTask, MagpieContext, MagpieSettings};
use engine::protocol::{BackendInfo, Event, ModelCard, Request};
use engine::synth::{self, SynthSettings};
use engine::{Error, Result};

/// What `PreQuery` needs of the loaded model, kept where the message handler can reach it.
pub struct TemplateSource {
    template: ChatTemplate,
    notes: Vec<String>,
}

impl TemplateSource {
    pub fn new<B: Backend>(m: &Loaded<B>, card: &ModelCard) -> Self {
        let builtin = m.files.chat_template.is_none().then(|| {
            match engine::prompt::builtin_for(m.files.config.arch, &m.tokenizer) {
                engine::chat::Builtin::ChatMl => "ChatML",
                engine::chat::Builtin::Llama3 => "Llama 3",
                engine::chat::Builtin::Gemma => "Gemma",
            }
        });
        let file = aviary_app::js::file_name(&card.source);
        Self { template: m.template.clone(), notes: run_rules::model_notes(builtin, &[&card.name, &file]) }
    }
}

/// The loaded model's pre-query template after `system`, or why there is none.
pub fn pre_query(shared: &Shared, system: Option<&str>) -> Event {
    let templates = shared.templates.borrow();
    let Some(t) = templates.as_ref() else {
        return Event::PreQuery { template: None, error: Some("no model is loaded".into()), notes: Vec::new() };
    };
    let system = system.filter(|s| !s.trim().is_empty());
    match magpie::pre_query_template(&t.template, system) {
        Ok(template) => Event::PreQuery { template: Some(template), error: None, notes: t.notes.clone() },
        Err(e) => Event::PreQuery { template: None, error: Some(e.to_string()), notes: t.notes.clone() },
    }
}

/// Runs a Magpie, Judge or Synth request sent in `epoch` (one overtaken by a cancel ends at once, cancelled).
pub async fn run<B: Backend>(shared: &Shared, m: &Loaded<B>, epoch: u64, request: Request) {
    let id = match &request {
        Request::Magpie { id, .. } | Request::Judge { id, .. } | Request::Synth { id, .. } => *id,
        _ => return,
    };
    if epoch != shared.epoch.get() {
        return shared.post(&Event::BatchDone { id, stats: BatchStats::default(), cancelled: true });
    }
    let result = match request {
        Request::Magpie { settings, samples, batch, .. } => magpie_rows(shared, m, id, settings, &samples, batch).await,
        Request::Judge { rows, batch, .. } => judge(shared, m, id, &rows, batch).await,
        Request::Synth { text, settings, batch, .. } => synthesis(shared, m, id, &text, &settings, batch).await,
        _ => return,
    };
    shared.post(&match result {
        Ok((stats, cancelled)) => Event::BatchDone { id, stats, cancelled },
        Err(e) => Event::error(Some(id), e),
    });
}

/// `requested` rows at a time, or the backend's default when the page leaves it to the worker (0).
fn batch_size(requested: usize, info: &BackendInfo) -> usize {
    if requested == 0 { run_rules::default_batch(info) } else { requested }
}

/// A runner with slots of `context` positions (at most the session's), whose cancel flag `Cancel` sets.
fn runner<'s, 'm, B: Backend, T: Task>(
    shared: &'s Shared,
    m: &'m Loaded<B>,
    batch: usize,
    context: usize,
) -> Result<(BatchRunner<'m, B, T>, Registered<'s>)> {
    let context = context.min(m.context).max(1);
    let mut runner = BatchRunner::new(&m.backend, &m.model, &m.tokenizer, batch_size(batch, &m.info), context)?;
    if matches!(m.info, BackendInfo::Cpu { .. }) {
        // The GPU path awaits a buffer map every step, which already lets the message handler hear a Cancel.
        runner.yield_hook = Some(event_loop_yield());
    }
    let registered = Registered::new(shared, runner.cancel_flag());
    Ok((runner, registered))
}

async fn magpie_rows<B: Backend>(
    shared: &Shared,
    m: &Loaded<B>,
    id: u64,
    settings: MagpieSettings,
    samples: &[u64],
    batch: usize,
) -> Result<(BatchStats, bool)> {
    settings.validate()?;
    let pre_query_tokens = m.tokenizer.encode(&settings.pre_query_template, false)?.len();
    // As `aviary magpie` sizes its slots, so a row that fills its slot ends where the CLI's does.
    let context = settings.context_needed(pre_query_tokens);
    let ctx = MagpieContext { template: &m.template, tokenizer: &m.tokenizer, settings };
    let (mut runner, registered) = runner(shared, m, batch, context)?;
    let stats = magpie::generate(&mut runner, &ctx, samples, &mut |row, stats| {
        shared.post(&Event::MagpieRow { id, row, stats: *stats });
        Ok(())
    })
    .await?;
    Ok((stats, registered.cancelled()))
}

/// Room in a judge slot for the rating instructions and the answer; a longer instruction is not judged.
const JUDGE_OVERHEAD: usize = 400;

async fn judge<B: Backend>(
    shared: &Shared,
    m: &Loaded<B>,
    id: u64,
    rows: &[(String, String)],
    batch: usize,
) -> Result<(BatchStats, bool)> {
    let context = magpie::JUDGE_CONTEXT.min(m.context);
    let mut tasks = Vec::new();
    let mut judged = Vec::new();
    for (row_id, instruction) in rows {
        let fits = m.tokenizer.encode(instruction, false)?.len() + JUDGE_OVERHEAD <= context;
        if fits {
            tasks.push(JudgeTask::new(&m.template, &m.tokenizer, instruction)?);
            judged.push(row_id.clone());
        } else {
            // Untagged, like an answer the judge could not write; the run goes on.
            shared.post(&Event::Tagged { id, row_id: row_id.clone(), tags: Default::default(), stats: BatchStats::default() });
        }
    }
    let (mut runner, registered) = runner(shared, m, batch, context)?;
    let stats = runner
        .run(tasks, &mut |index, task, stats| {
            let row_id = judged.get(index).cloned().unwrap_or_default();
            shared.post(&Event::Tagged { id, row_id, tags: task.tags.unwrap_or_default(), stats: *stats });
            Ok(())
        })
        .await?;
    Ok((stats, registered.cancelled()))
}

async fn synthesis<B: Backend>(
    shared: &Shared,
    m: &Loaded<B>,
    id: u64,
    text: &str,
    settings: &SynthSettings,
    batch: usize,
) -> Result<(BatchStats, bool)> {
    let chunks = synth::chunks(text, &m.tokenizer, settings)?;
    let total = chunks.len();
    let context = settings.context_needed();
    let (mut runner, registered) = runner(shared, m, batch, context)?;
    let stats = synth::synthesize(&mut runner, &m.template, &m.tokenizer, settings, chunks, &mut |result, stats| {
        shared.post(&Event::SynthChunk { id, result, total, stats: *stats });
        Ok(())
    })
    .await
    .map_err(|e| match e {
        // A slot too small for the request: say what would fit.
        Error::InvalidArgument(why) if context > m.context => Error::InvalidArgument(format!(
            "{why} (this model holds {} positions: try smaller chunks or fewer tokens)",
            m.context
        )),
        other => other,
    })?;
    Ok((stats, registered.cancelled()))
}
