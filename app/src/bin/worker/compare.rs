//! The Compare view's work in the worker: two configurations of the loaded model (each a set of adapters at
//! scales; none is the base) answer the same instructions greedily; each answer is then read by both (teacher
//! forcing), and compared token by token (`engine::compare`). `Compared` per answer, `CompareDone` at the end;
//! `Cancel` stops between answers.

use super::lora::Adapters;
use super::{Loaded, Registered, Shared};
use engine::backend::Backend;
use engine::chat::Message;
use engine::compare::compare_answer;
use engine::protocol::{CompareSide, Event};
use engine::sampling::SamplingParams;
use engine::session::{GenerateOptions, LoraChoice, Session};
use engine::Result;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The likeliest tokens shown per position.
const CANDIDATES: usize = 5;

#[allow(clippy::too_many_arguments)]
pub async fn run<B: Backend>(
    shared: &Shared,
    m: &Loaded<B>,
    session: &mut Session<'_, B>,
    adapters: &Adapters<B>,
    id: u64,
    instructions: &[String],
    sides: [&[LoraChoice]; 2],
    max_tokens: usize,
) {
    let registered = Registered::new(shared, Arc::new(AtomicBool::new(false)));
    let result = compare_all(shared, m, session, adapters, id, instructions, sides, max_tokens, &registered).await;
    drop(registered);
    // The session's cache now holds the last teacher-forced sequence under some stack: the next chat starts anew.
    let _ = session.reset();
    shared.post(&match result {
        Ok(cancelled) => Event::CompareDone { id, cancelled },
        Err(e) => Event::error(Some(id), e),
    });
}

#[allow(clippy::too_many_arguments)]
async fn compare_all<B: Backend>(
    shared: &Shared,
    m: &Loaded<B>,
    session: &mut Session<'_, B>,
    adapters: &Adapters<B>,
    id: u64,
    instructions: &[String],
    sides: [&[LoraChoice]; 2],
    max_tokens: usize,
    run: &Registered<'_>,
) -> Result<bool> {
    let stacks = [adapters.stack(sides[0])?, adapters.stack(sides[1])?];
    let options = GenerateOptions { max_tokens: max_tokens.max(1), sampling: SamplingParams::greedy(), ..Default::default() };
    for (index, instruction) in instructions.iter().enumerate() {
        let prompt = engine::prompt::encode_chat(&m.template, &m.tokenizer, &[Message::new("user", instruction.clone())])?;
        for (s, side) in [CompareSide::A, CompareSide::B].into_iter().enumerate() {
            if run.cancelled() {
                return Ok(true);
            }
            session.set_lora(stacks[s].clone())?;
            let answer = session.generate(&prompt, &options, &mut |_, _| {}).await?;
            if answer.tokens.is_empty() {
                continue;
            }
            let mut sequence = prompt.clone();
            sequence.extend(&answer.tokens);
            let mut rows = Vec::with_capacity(2);
            for stack in &stacks {
                session.set_lora(stack.clone())?;
                rows.push(session.logits(&sequence).await?);
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
            shared.post(&Event::Compared { id, index, side, answer: answer.text, pieces, texts, comparison });
        }
    }
    Ok(false)
}
