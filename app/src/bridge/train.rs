//! Training and comparing through the worker: starting, pausing, resuming and cancelling a run, the stored
//! checkpoints, exporting a trained adapter, a comparison of two configurations, and the worker's answers.

use super::Bridge;
use crate::state::{CompareRow, CompareState, TrainRunInfo, TrainState, TrainStatus};
use engine::protocol::{AdapterFormat, Event, Request};
use engine::train::data::Record;
use leptos::prelude::*;

fn fresh_id() -> u64 {
    // Distinct from chat and batch ids, which count up from 1 in the page.
    (js_sys::Date::now() as u64) << 8 | (js_sys::Math::random() * 255.0) as u64
}

/// Starts a new run over `records` with the form's settings.
pub fn start(bridge: Bridge, train: TrainState, records: Vec<Record>) {
    if train.status.with_untracked(|s| s.id().is_some()) {
        return;
    }
    let id = fresh_id();
    let mut job = train.form.get_untracked();
    job.records = records;
    train.losses.set(Vec::new());
    train.val_losses.set(Vec::new());
    train.step.set(0);
    train.speed.set(None);
    train.run.set(None);
    train.notice.set(None);
    train.status.set(TrainStatus::Running { id });
    bridge.send(Request::Train { id, job, resume: false });
}

/// Continues run `name` from its latest checkpoint.
pub fn resume(bridge: Bridge, train: TrainState, name: String) {
    if train.status.with_untracked(|s| s.id().is_some()) {
        return;
    }
    let id = fresh_id();
    let mut job = train.form.get_untracked();
    job.name = name.clone();
    job.records = Vec::new(); // the worker reads the run's own
    // Show the run's curve so far.
    if let Some(c) = train.checkpoints.with_untracked(|l| l.iter().find(|c| c.name == name).cloned()) {
        train.losses.set(c.losses.iter().map(|&(s, l, _)| (s, l)).collect());
        train.val_losses.set(c.losses.iter().filter_map(|&(s, _, v)| v.map(|v| (s, v))).collect());
        train.step.set(c.step);
    }
    train.notice.set(None);
    train.status.set(TrainStatus::Running { id });
    bridge.send(Request::Train { id, job, resume: true });
}

/// Stops after the current step, keeping a checkpoint.
pub fn pause(bridge: Bridge, train: TrainState) {
    if let TrainStatus::Running { id } = train.status.get_untracked() {
        train.status.set(TrainStatus::Pausing { id });
        bridge.send(Request::Cancel);
    }
}

/// Stops and forgets the run (its checkpoint too).
pub fn cancel(bridge: Bridge, train: TrainState) {
    match train.status.get_untracked() {
        TrainStatus::Running { id } | TrainStatus::Pausing { id } => {
            train.status.set(TrainStatus::Cancelling { id });
            bridge.send(Request::Cancel);
        }
        TrainStatus::Paused => {
            if let Some(run) = train.run.get_untracked() {
                bridge.send(Request::DeleteCheckpoint { name: run.name });
            }
            train.status.set(TrainStatus::Idle);
        }
        _ => {}
    }
}

pub fn export(bridge: Bridge, id: u64, format: AdapterFormat) {
    bridge.send(Request::ExportAdapter { id, format });
}

/// Starts a comparison; `known` holds (instruction, answer) pairs whose answers serve the judge as references.
pub fn compare(bridge: Bridge, compare: CompareState, known: &[(String, String)]) {
    if compare.running.get_untracked().is_some() {
        return;
    }
    let instructions: Vec<String> = compare
        .instructions
        .get_untracked()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if instructions.is_empty() {
        compare.error.set(Some("write at least one instruction, one per line".into()));
        return;
    }
    // The worker fetches from its own script's address: a relative one is resolved against the page's here.
    let teacher = compare.teacher.get_untracked().map(|url| url.trim().to_string());
    let teacher = teacher.map(|url| if url.is_empty() { url } else { aviary_app::js::absolute_url(&url) });
    if teacher.as_deref() == Some("") {
        compare.error.set(Some("name the teacher model: its address, or pick one kept in this browser".into()));
        return;
    }
    let judge = compare.judge.get_untracked();
    if judge == Some(engine::protocol::Judge::Teacher) && teacher.is_none() {
        compare.error.set(Some("the teacher judges only when side A is a teacher model".into()));
        return;
    }
    let references = match judge {
        Some(_) => instructions
            .iter()
            .map(|i| known.iter().find(|(k, _)| k.trim() == i).map(|(_, a)| a.clone()).unwrap_or_default())
            .collect(),
        None => Vec::new(),
    };
    let id = fresh_id();
    let [a, b] = compare.sides.get_untracked();
    compare.rows.set(Vec::new());
    compare.error.set(None);
    compare.loading.set(None);
    compare.running.set(Some(id));
    let max_tokens = compare.max_tokens.get_untracked();
    bridge.send(Request::Compare { id, instructions, a, b, max_tokens, teacher, judge, references });
}

pub fn on_event(event: &Event, bridge: Bridge, train: TrainState, compare: CompareState) {
    let current = train.status.with_untracked(|s| s.id());
    match event {
        Event::TrainStarted { id, name, step, total_steps, train_examples, val_examples, truncated } if current == Some(*id) => {
            train.step.set(*step);
            train.run.set(Some(TrainRunInfo {
                name: name.clone(),
                total_steps: *total_steps,
                train_examples: *train_examples,
                val_examples: *val_examples,
                truncated: *truncated,
            }));
            if *truncated > 0 {
                train.notice.set(Some(format!(
                    "{truncated} example(s) were longer than the maximum length and were cut"
                )));
            }
        }
        Event::TrainStep { id, progress } if current == Some(*id) => {
            let r = progress.report;
            train.step.set(r.step);
            train.losses.update(|l| l.push((r.step, r.loss)));
            if let Some(v) = progress.val_loss {
                train.val_losses.update(|l| l.push((r.step, v)));
            }
            train.speed.set(Some((progress.tokens_per_second, progress.seconds_left)));
        }
        Event::TrainDone { id, paused, .. } if current == Some(*id) => {
            let cancelling = matches!(train.status.get_untracked(), TrainStatus::Cancelling { .. });
            if cancelling {
                if let Some(run) = train.run.get_untracked() {
                    bridge.send(Request::DeleteCheckpoint { name: run.name });
                }
                train.status.set(TrainStatus::Idle);
            } else if *paused {
                train.status.set(TrainStatus::Paused);
            } else {
                train.status.set(TrainStatus::Done);
            }
            bridge.send(Request::ListCheckpoints);
        }
        Event::LoraLoaded { id, name, url: None, .. }
            if train.run.with_untracked(|r| r.as_ref().is_some_and(|r| r.name == *name)) =>
        {
            train.trained.update(|t| t.push((*id, name.clone())));
        }
        Event::Checkpoints { runs } => train.checkpoints.set(runs.clone()),
        Event::AdapterFile { name, mime, base64 } => {
            use base64::Engine;
            match base64::engine::general_purpose::STANDARD.decode(base64) {
                Ok(bytes) => {
                    if let Err(e) = crate::files::download_bytes(name, &bytes, mime) {
                        train.notice.set(Some(e));
                    }
                }
                Err(e) => train.notice.set(Some(format!("the exported file arrived damaged: {e}"))),
            }
        }
        Event::Compared { id, index, side, answer, pieces, texts, comparison } if compare.running.get_untracked() == Some(*id) => {
            compare.loading.set(None);
            compare.rows.update(|rows| {
                rows.push(CompareRow {
                    index: *index,
                    side: *side,
                    answer: answer.clone(),
                    pieces: pieces.clone(),
                    texts: texts.iter().cloned().collect(),
                    comparison: comparison.clone(),
                    score: None,
                })
            });
        }
        Event::CompareScored { id, index, side, score, reply } if compare.running.get_untracked() == Some(*id) => {
            compare.rows.update(|rows| {
                if let Some(row) = rows.iter_mut().find(|r| r.index == *index && r.side == *side) {
                    row.score = Some((*score, reply.clone()));
                }
            });
        }
        Event::CompareLoading { id, stage, done, total } if compare.running.get_untracked() == Some(*id) => {
            compare.loading.set(Some((*stage, *done, *total)))
        }
        Event::CompareDone { id, .. } if compare.running.get_untracked() == Some(*id) => {
            compare.loading.set(None);
            compare.running.set(None)
        }
        Event::Error { id: Some(id), message, .. } => {
            if current == Some(*id) {
                train.status.set(TrainStatus::Failed(message.clone()));
                bridge.send(Request::ListCheckpoints);
            }
            if compare.running.get_untracked() == Some(*id) {
                compare.loading.set(None);
                compare.running.set(None);
                compare.error.set(Some(message.clone()));
            }
        }
        Event::Started => bridge.send(Request::ListCheckpoints),
        _ => {}
    }
}
