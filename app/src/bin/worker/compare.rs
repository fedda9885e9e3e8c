//! The Compare view's work in the worker: two configurations answer the same instructions greedily — each a set of
//! adapters at scales on the loaded model (none is the base), or, on side A, a teacher model loaded beside the
//! loaded student for this comparison alone (Gemma 2's distillation pairs). Each answer is then read by both
//! (teacher forcing, on the loaded model's chat template) and compared token by token (`engine::compare`).
//! With a judge (the base model or the teacher), each answer is then scored 0–100 with ch. 7's prompt
//! (`CompareScored`). `Compared` per answer, `CompareDone` at the end; `Cancel` stops the teacher's download and
//! between answers.

use super::lora::Adapters;
use super::{Loaded, Registered, Shared};
use aviary_app::cached_source::{self, Target};
use engine::backend::Backend;
use engine::chat::Message;
use engine::compare::{check_same_vocabulary, compare_answer};
use engine::lora::LoraStack;
use engine::model::Transformer;
use engine::protocol::{CompareSide, Event, Judge, Stage};
use engine::sampling::SamplingParams;
use engine::session::{GenerateOptions, Generation, LoraChoice, Session};
use engine::tokenizer::Tokenizer;
use engine::train::data::Record;
use engine::train::score::{parse_score, score_prompt, SCORE_MAX_TOKENS};
use engine::Result;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The likeliest tokens shown per position.
const CANDIDATES: usize = 5;

/// What a comparison was asked for.
pub struct Ask<'a> {
    pub id: u64,
    pub instructions: &'a [String],
    pub sides: [&'a [LoraChoice]; 2],
    pub max_tokens: usize,
    pub teacher: Option<&'a str>,
    pub judge: Option<Judge>,
    /// Reference answers by instruction (missing or empty: none).
    pub references: &'a [String],
}

/// Who answers and reads on one side.
enum Reader<B: Backend> {
    /// The loaded model under a stack of adapters (empty: the base).
    Loaded(LoraStack<B>),
    /// The teacher model.
    Teacher,
}

/// A teacher model loaded on the student's backend.
struct Teacher<B: Backend> {
    model: Transformer<B>,
    tokenizer: Tokenizer,
    context: usize,
}

pub async fn run<B: Backend>(
    shared: &Shared,
    m: &Loaded<B>,
    session: &mut Session<'_, B>,
    adapters: &Adapters<B>,
    ask: Ask<'_>,
) {
    let flag = Arc::new(AtomicBool::new(false));
    let registered = Registered::new(shared, flag.clone());
    let id = ask.id;
    let result = async {
        let teacher = match ask.teacher {
            Some(url) => match load_teacher(shared, m, id, url, flag).await {
                Ok(Some(t)) => Some(t),
                Ok(None) => return Ok(true),
                Err(e) => {
                    let words = engine::error::describe_load_error(&e).summary;
                    return Err(engine::Error::InvalidArgument(format!("The teacher model did not load: {words}")));
                }
            },
            None => None,
        };
        let mut teacher_session = match &teacher {
            Some(t) => Some(Session::new(&m.backend, &t.model, Some(&t.tokenizer), t.context)?),
            None => None,
        };
        let readers = match teacher_session {
            Some(_) => [Reader::Teacher, Reader::Loaded(adapters.stack(ask.sides[1])?)],
            None => [Reader::Loaded(adapters.stack(ask.sides[0])?), Reader::Loaded(adapters.stack(ask.sides[1])?)],
        };
        let judge = match ask.judge {
            Some(Judge::Teacher) if teacher_session.is_none() => {
                return Err(engine::Error::InvalidArgument("the teacher cannot judge: no teacher model is chosen".into()))
            }
            Some(Judge::Teacher) => Some(Reader::Teacher),
            Some(Judge::Base) => Some(Reader::Loaded(adapters.stack(&[])?)),
            None => None,
        };
        compare_all(shared, m, session, teacher_session.as_mut(), &readers, judge.as_ref(), &ask, &registered).await
    }
    .await;
    drop(registered);
    // The session's cache now holds the last teacher-forced sequence under some stack: the next chat starts anew.
    let _ = session.reset();
    shared.post(&match result {
        Ok(cancelled) => Event::CompareDone { id, cancelled },
        Err(e) => Event::error(Some(id), e),
    });
}

/// The teacher at `url` (from storage, or downloaded into it), checked to share the student's vocabulary and to fit
/// beside it, then loaded on the student's backend; None when cancelled.
async fn load_teacher<B: Backend>(
    shared: &Shared,
    m: &Loaded<B>,
    id: u64,
    url: &str,
    cancel: Arc<AtomicBool>,
) -> Result<Option<Teacher<B>>> {
    let cancelled: aviary_app::http_source::CancelCheck = Rc::new(move || cancel.load(Ordering::Relaxed));
    let progress = |stage| move |done, total| shared.post(&Event::CompareLoading { id, stage, done, total });
    let opened = cached_source::open_model(Target::Url(url.to_string()), cancelled.clone(), &progress(Stage::Download)).await;
    let (mut files, _) = match opened {
        Err(engine::Error::Cancelled) => return Ok(None),
        other => other?,
    };
    let tokenizer = files
        .tokenizer
        .take()
        .ok_or_else(|| engine::Error::Tokenizer("the teacher model's file has no tokenizer".into()))?;
    check_same_vocabulary(&m.tokenizer, &tokenizer)?;
    files.check_capacity(&m.backend)?;
    if cancelled() {
        return Ok(None);
    }
    let context = m.context.min(files.config.max_position_embeddings).max(1);
    let model = files.load(&m.backend, &mut progress(Stage::Weights)).await?;
    Ok(Some(Teacher { model, tokenizer, context }))
}

/// `reader`'s greedy answer to `prompt`.
async fn answer<B: Backend>(
    reader: &Reader<B>,
    session: &mut Session<'_, B>,
    teacher: Option<&mut Session<'_, B>>,
    prompt: &[u32],
    options: &GenerateOptions,
) -> Result<Generation> {
    match reader {
        Reader::Loaded(stack) => {
            session.set_lora(stack.clone())?;
            session.generate(prompt, options, &mut |_, _| {}).await
        }
        Reader::Teacher => no_teacher(teacher)?.generate(prompt, options, &mut |_, _| {}).await,
    }
}

/// `reader`'s logits at every position of `sequence` (teacher forcing).
async fn read<B: Backend>(
    reader: &Reader<B>,
    session: &mut Session<'_, B>,
    teacher: Option<&mut Session<'_, B>>,
    sequence: &[u32],
) -> Result<Vec<Vec<f32>>> {
    match reader {
        Reader::Loaded(stack) => {
            session.set_lora(stack.clone())?;
            session.logits(sequence).await
        }
        Reader::Teacher => no_teacher(teacher)?.logits(sequence).await,
    }
}

fn no_teacher<T>(teacher: Option<T>) -> Result<T> {
    teacher.ok_or_else(|| engine::Error::InvalidArgument("no teacher model is loaded".into()))
}

#[allow(clippy::too_many_arguments)]
async fn compare_all<B: Backend>(
    shared: &Shared,
    m: &Loaded<B>,
    session: &mut Session<'_, B>,
    mut teacher: Option<&mut Session<'_, B>>,
    readers: &[Reader<B>; 2],
    judge: Option<&Reader<B>>,
    ask: &Ask<'_>,
    run: &Registered<'_>,
) -> Result<bool> {
    let options = GenerateOptions { max_tokens: ask.max_tokens.max(1), sampling: SamplingParams::greedy(), ..Default::default() };
    for (index, instruction) in ask.instructions.iter().enumerate() {
        let prompt = engine::prompt::encode_chat(&m.template, &m.tokenizer, &[Message::new("user", instruction.clone())])?;
        for (s, side) in [CompareSide::A, CompareSide::B].into_iter().enumerate() {
            if run.cancelled() {
                return Ok(true);
            }
            let answer = answer(&readers[s], session, teacher.as_deref_mut(), &prompt, &options).await?;
            if answer.tokens.is_empty() {
                continue;
            }
            let mut sequence = prompt.clone();
            sequence.extend(&answer.tokens);
            let mut rows = Vec::with_capacity(2);
            for reader in readers {
                rows.push(read(reader, session, teacher.as_deref_mut(), &sequence).await?);
            }
            let comparison = compare_answer(prompt.len(), &answer.tokens, &rows[0], &rows[1], CANDIDATES)?;
            let pieces = answer
                .tokens
                .iter()
                .map(|&t| m.tokenizer.decode(&[t], false))
                .collect::<Result<Vec<_>>>()?;
            // The candidates' own texts, for the per-token view.
            let mut texts = std::collections::BTreeMap::new();
            for t in &comparison.tokens {
                for &(c, _) in t.top_p.iter().chain(&t.top_q) {
                    if let std::collections::btree_map::Entry::Vacant(e) = texts.entry(c) {
                        e.insert(m.tokenizer.decode(&[c], false)?);
                    }
                }
            }
            let texts = texts.into_iter().collect();
            let text = answer.text.clone();
            shared.post(&Event::Compared { id: ask.id, index, side, answer: answer.text, pieces, texts, comparison });
            if let Some(judge) = judge {
                if run.cancelled() {
                    return Ok(true);
                }
                let record = Record {
                    instruction: instruction.clone(),
                    input: String::new(),
                    output: ask.references.get(index).cloned().unwrap_or_default(),
                };
                let question = score_prompt(&record, &text);
                let prompt = engine::prompt::encode_chat(&m.template, &m.tokenizer, &[Message::new("user", question)])?;
                let scoring = GenerateOptions { max_tokens: SCORE_MAX_TOKENS, ..options.clone() };
                // A judge that cannot answer (its prompt longer than its context) leaves this answer unscored, not
                // the comparison undone.
                let (score, reply) = match self::answer(judge, session, teacher.as_deref_mut(), &prompt, &scoring).await {
                    Ok(g) => (parse_score(&g.text), g.text),
                    Err(engine::Error::Cancelled) => return Ok(true),
                    Err(e) => (None, format!("the judge could not answer: {e}")),
                };
                shared.post(&Event::CompareScored { id: ask.id, index, side, score, reply });
            }
        }
    }
    Ok(false)
}
