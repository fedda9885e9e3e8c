//! The page's side of batch runs: Magpie (Start, Pause, Resume, Cancel), the judge and synthesis requests out, and
//! their events into `DatasetState`. Run ids are drawn far above the chat's message ids, so an `Error` for one is
//! never mistaken for the other's.

use super::Bridge;
use crate::state::{DatasetState, JudgeRun, ModelState, PreQueryInfo, RunProgress, RunSettings, RunStatus, Status, SystemChoice};
use aviary_app::run_rules;
use engine::protocol::{Event, Request};
use leptos::prelude::*;
use std::cell::Cell;

thread_local! {
    static NEXT: Cell<u64> = const { Cell::new(0) };
}

/// A run id no chat message has: milliseconds since the epoch times 1000, plus a counter.
fn fresh_id() -> u64 {
    let n = NEXT.with(|c| {
        let n = c.get();
        c.set(n + 1);
        n
    });
    (js_sys::Date::now() as u64) * 1000 + n % 1000
}

/// The system prompt `choice` stands for.
pub fn system_prompt(ds: DatasetState) -> Option<String> {
    match ds.system_choice.get() {
        SystemChoice::None => None,
        SystemChoice::Custom => Some(ds.custom_system.get()).filter(|s| !s.trim().is_empty()),
        SystemChoice::Preset(p) => Some(p.text().to_string()),
    }
}

/// The name rows record for the loaded model: its file name, as `aviary magpie` records it.
pub fn model_name(model: ModelState) -> Option<String> {
    model.card.with(|c| c.as_ref().map(|c| aviary_app::js::file_name(&c.source)))
}

/// Asks the worker for the pre-query template after `system`.
pub fn request_pre_query(bridge: Bridge, system: Option<String>) {
    bridge.send(Request::PreQuery { system_prompt: system });
}

/// Whether a batch run holds the model; if so, says so where the model's status is shown.
pub fn refuse_while_running() -> bool {
    let ds = expect_context::<DatasetState>();
    let busy = ds.busy();
    if busy {
        expect_context::<ModelState>().notice.set(Some(run_rules::BUSY.to_string()));
    }
    busy
}

fn refuse(ds: DatasetState, why: impl Into<String>) {
    ds.notice.set(Some(why.into()));
}

/// Starts a run with the form's settings over samples 0..n (rows already there with the same id are replaced).
pub fn start_magpie(bridge: Bridge) {
    let ds = expect_context::<DatasetState>();
    let model = expect_context::<ModelState>();
    if ds.busy() {
        return refuse(ds, "a run is going: wait for it or stop it first");
    }
    if model.status.get_untracked() != Status::Ready {
        return refuse(ds, "load a model first");
    }
    let mut run = ds.form.get_untracked();
    run.settings.system_prompt = untrack(|| system_prompt(ds));
    run.settings.model = untrack(|| model_name(model)).unwrap_or_default();
    if run.n == 0 {
        return refuse(ds, "N is 0: ask for at least one row");
    }
    if let Err(e) = run.settings.validate() {
        return refuse(ds, e.to_string());
    }
    let samples = (0..run.n).collect();
    begin(bridge, ds, run, samples);
}

/// Continues the last run: the same settings, for the sample indices whose rows are not in the dataset (a row
/// depends only on its index, the seed and the settings, so the result is the run's as if never paused).
pub fn resume_magpie(bridge: Bridge) {
    let ds = expect_context::<DatasetState>();
    let model = expect_context::<ModelState>();
    let Some(run) = ds.run.get_untracked() else { return };
    if ds.busy() {
        return refuse(ds, "a run is going: wait for it or stop it first");
    }
    if model.status.get_untracked() != Status::Ready {
        return refuse(ds, "load a model first");
    }
    let loaded = untrack(|| model_name(model)).unwrap_or_default();
    if loaded != run.settings.model {
        return refuse(ds, format!("this run was made with {}: load it to resume (now loaded: {loaded})", run.settings.model));
    }
    let samples = missing(ds, &run);
    if samples.is_empty() {
        ds.status.set(RunStatus::Idle);
        ds.progress.set(Some(RunProgress { done: run.n, n: run.n, ..Default::default() }));
        ds.touch();
        return;
    }
    begin(bridge, ds, run, samples);
}

/// The sample indices of `run` whose rows the dataset lacks.
pub fn missing(ds: DatasetState, run: &RunSettings) -> Vec<u64> {
    let present: std::collections::HashSet<String> = ds.rows.with_untracked(|rows| rows.iter().map(|r| r.id.clone()).collect());
    (0..run.n).filter(|&i| !present.contains(&dataset::row_id(&run.settings.configs(i)))).collect()
}

fn begin(bridge: Bridge, ds: DatasetState, run: RunSettings, samples: Vec<u64>) {
    let id = fresh_id();
    ds.run_ids.update_value(|ids| ids.push(id));
    ds.progress.set(Some(RunProgress { done: run.n - samples.len() as u64, n: run.n, ..Default::default() }));
    ds.status.set(RunStatus::Running { id, started_ms: js_sys::Date::now() });
    ds.notice.set(None);
    ds.run.set(Some(run.clone()));
    ds.touch();
    bridge.send(Request::Magpie { id, settings: run.settings, samples, batch: run.batch });
}

/// Stops the run and keeps its rows; Resume continues it.
pub fn pause_magpie(bridge: Bridge) {
    let ds = expect_context::<DatasetState>();
    if ds.status.get_untracked().running_id().is_some() {
        bridge.send(Request::Cancel);
        ds.status.set(RunStatus::Paused);
        ds.touch();
    }
}

/// Stops the run for good: its rows stay, and there is nothing to resume.
pub fn cancel_magpie(bridge: Bridge) {
    let ds = expect_context::<DatasetState>();
    if ds.status.get_untracked().running_id().is_some() {
        bridge.send(Request::Cancel);
    }
    ds.status.set(RunStatus::Idle);
    ds.touch();
}

/// Tags every row that has no tags yet, with the loaded model as judge.
pub fn judge_untagged(bridge: Bridge) {
    let ds = expect_context::<DatasetState>();
    if ds.busy() {
        return refuse(ds, "a run is going: wait for it or stop it first");
    }
    if expect_context::<ModelState>().status.get_untracked() != Status::Ready {
        return refuse(ds, "load a model first");
    }
    let rows: Vec<(String, String)> = ds.rows.with_untracked(|rows| {
        rows.iter()
            .filter(|r| r.tags == dataset::Tags::default())
            .map(|r| (r.id.clone(), r.instruction.clone()))
            .collect()
    });
    if rows.is_empty() {
        return refuse(ds, "every row is tagged already");
    }
    let id = fresh_id();
    ds.judge.set(Some(JudgeRun { id, done: 0, tagged: 0, total: rows.len() }));
    ds.notice.set(None);
    let batch = ds.form.with_untracked(|f| f.batch);
    bridge.send(Request::Judge { id, rows, batch });
}

/// Stops the judge; the tags given so far stay (and those it finished before it heard the stop still come).
pub fn stop_judge(bridge: Bridge) {
    let ds = expect_context::<DatasetState>();
    if ds.judge.get_untracked().is_some() {
        bridge.send(Request::Cancel);
    }
}

/// Starts synthesis over the text in the synthesis view.
pub fn start_synth(bridge: Bridge) {
    let ds = expect_context::<DatasetState>();
    let synth = ds.synth;
    if ds.busy() {
        synth.status.set(RunStatus::Failed("a run is going: wait for it or stop it first".into()));
        return;
    }
    if expect_context::<ModelState>().status.get_untracked() != Status::Ready {
        synth.status.set(RunStatus::Failed("load a model first".into()));
        return;
    }
    let text = synth.text.get_untracked();
    if text.trim().is_empty() {
        synth.status.set(RunStatus::Failed("there is no text to synthesise from".into()));
        return;
    }
    let id = fresh_id();
    synth.id.set(id);
    synth.results.set(Vec::new());
    synth.total.set(0);
    synth.stats.set(None);
    synth.status.set(RunStatus::Running { id, started_ms: js_sys::Date::now() });
    let settings = synth.settings.get_untracked();
    let batch = ds.form.with_untracked(|f| f.batch);
    bridge.send(Request::Synth { id, text, settings, batch });
}

pub fn stop_synth(bridge: Bridge) {
    let synth = expect_context::<DatasetState>().synth;
    if synth.status.get_untracked().running_id().is_some() {
        bridge.send(Request::Cancel);
        synth.status.set(RunStatus::Paused);
    }
}

/// Routes the worker's batch events into the dataset's state.
pub fn on_event(event: &Event, ds: DatasetState, model: ModelState) {
    match event {
        Event::PreQuery { template, error, notes } => {
            if let Some(t) = template {
                ds.form.update(|f| f.settings.pre_query_template = t.clone());
            }
            ds.pre_query.set(PreQueryInfo { template: template.clone(), error: error.clone(), notes: notes.clone() });
        }
        Event::MagpieRow { id, row, stats } => {
            if !ds.run_ids.with_value(|ids| ids.contains(id)) {
                return;
            }
            ds.put_row(row.clone());
            if ds.status.with_untracked(|s| s.running_id()) == Some(*id) {
                ds.progress.update(|p| {
                    if let Some(p) = p {
                        p.done = (p.done + 1).min(p.n);
                        p.rows_per_minute = stats.tasks_per_minute();
                        p.tokens_per_second = stats.tokens_per_second();
                        p.stats = Some(*stats);
                    }
                });
            }
        }
        Event::Tagged { id, row_id, tags, .. } if ds.judge.with_untracked(|j| j.is_some_and(|j| j.id == *id)) => {
            ds.set_tags(row_id, tags.clone());
            let tagged = *tags != dataset::Tags::default();
            ds.judge.update(|j| {
                if let Some(j) = j {
                    j.done += 1;
                    j.tagged += usize::from(tagged);
                }
            });
        }
        Event::SynthChunk { id, result, total, stats } => {
            let synth = ds.synth;
            if synth.id.get_untracked() == *id {
                synth.total.set(*total);
                synth.stats.set(Some(*stats));
                synth.results.update(|r| r.push(result.clone()));
            }
        }
        Event::BatchDone { id, stats, cancelled } => {
            if ds.status.with_untracked(|s| s.running_id()) == Some(*id) {
                ds.status.set(if *cancelled { RunStatus::Paused } else { RunStatus::Idle });
                ds.progress.update(|p| {
                    if let Some(p) = p {
                        p.rows_per_minute = stats.tasks_per_minute();
                        p.tokens_per_second = stats.tokens_per_second();
                        p.stats = Some(*stats);
                    }
                });
                ds.touch();
            }
            if let Some(j) = ds.judge.get_untracked().filter(|j| j.id == *id) {
                ds.judge.set(None);
                let stopped = if *cancelled { " (stopped)" } else { "" };
                ds.notice.set(Some(format!("the judge tagged {} of {} rows{stopped}", j.tagged, j.total)));
            }
            let synth = ds.synth;
            if synth.status.with_untracked(|s| s.running_id()) == Some(*id) {
                synth.stats.set(Some(*stats));
                synth.status.set(if *cancelled { RunStatus::Paused } else { RunStatus::Idle });
            }
        }
        Event::Error { id: Some(id), message, .. } => {
            if ds.status.with_untracked(|s| s.running_id()) == Some(*id) {
                ds.status.set(RunStatus::Failed(message.clone()));
                ds.touch();
            }
            if ds.judge.with_untracked(|j| j.is_some_and(|j| j.id == *id)) {
                ds.judge.set(None);
                ds.notice.set(Some(format!("judging failed: {message}")));
            }
            if ds.synth.status.with_untracked(|s| s.running_id()) == Some(*id) {
                ds.synth.status.set(RunStatus::Failed(message.clone()));
            }
        }
        _ => {}
    }
    // A load refused for a run that has now ended: the refusal is old news.
    if matches!(event, Event::BatchDone { .. } | Event::Error { id: Some(_), .. })
        && model.notice.with_untracked(|n| n.as_deref() == Some(run_rules::BUSY))
        && !untrack(|| ds.busy())
    {
        model.notice.set(None);
    }
}
