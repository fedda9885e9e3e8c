//! Fine-tuning a LoRA adapter on the loaded model in the worker: the run's examples from the page's records, the
//! engine's `Trainer` step by step (`TrainStep` after each), a checkpoint in OPFS every `checkpoint_every` steps and
//! when paused (`Cancel` pauses after the current step), and at the end the adapter fitted to the model like any
//! other (`LoraLoaded`) and kept for export. A run resumed — after a pause or a closed tab — continues from its
//! latest checkpoint with the job stored beside it.

use super::lora::Adapters;
use super::{Loaded, Registered, Shared};
use aviary_app::train_store;
use engine::config::RopeLayout;
use engine::lora::{Adapter, LoraKind};
use engine::protocol::Event;
use engine::train::export::{checkpoint_files, read_checkpoint};
use engine::train::job::{examples, CheckpointInfo, TrainJob, TrainProgress};
use engine::train::{TrainBackend, Trainer};
use engine::source::ByteSource;
use engine::{Error, Result};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Runs (or resumes) the job; every outcome is posted.
pub async fn run<B: TrainBackend>(
    shared: &Shared,
    m: &Loaded<B>,
    adapters: &mut Adapters<B>,
    epoch: u64,
    id: u64,
    job: TrainJob,
    resume: bool,
) {
    if epoch != shared.epoch.get() {
        return shared.post(&Event::TrainDone { id, paused: true, step: 0, total_steps: 0 });
    }
    if let Err(e) = train(shared, m, adapters, id, job, resume).await {
        shared.post(&Event::error(Some(id), e));
    }
}

fn checkpoint_info<B: TrainBackend>(t: &Trainer<B>, name: &str, model: &str, losses: &[(u64, f32, Option<f32>)]) -> CheckpointInfo {
    CheckpointInfo { name: name.to_string(), step: t.state.step, total_steps: t.total_steps(), model: model.to_string(), losses: losses.to_vec() }
}

async fn save<B: TrainBackend>(m: &Loaded<B>, t: &Trainer<'_, B>, info: &CheckpointInfo) -> Result<()> {
    let c = &m.model.config;
    let files = checkpoint_files(&t.state, c, c.rope_layout, &t.settings, &info.model)?;
    train_store::save(&info.name, info, &files)
        .await
        .map_err(|why| Error::Training(format!("the checkpoint could not be saved: {why}")))
}

async fn train<B: TrainBackend>(
    shared: &Shared,
    m: &Loaded<B>,
    adapters: &mut Adapters<B>,
    id: u64,
    job: TrainJob,
    resume: bool,
) -> Result<()> {
    let c = &m.model.config;
    let model_name = m.files.sources.first().map(|s| aviary_app::js::file_name(&s.name())).unwrap_or_default();
    let (job, state, mut losses) = if resume {
        let (info, job, files) = train_store::load(&job.name).await.map_err(Error::InvalidArgument)?;
        let (settings, state) = read_checkpoint(&files, c, c.rope_layout)?;
        (TrainJob { settings, ..job }, Some(state), info.losses)
    } else {
        job.settings.validate()?;
        train_store::save_job(&job.name, &job).await.map_err(Error::InvalidArgument)?;
        (job, None, Vec::new())
    };
    let (examples, truncated) = examples(&job, &m.tokenizer, &m.template)?;
    let state = state.unwrap_or_else(|| Trainer::fresh_state(&m.model, &job.settings));
    let mut trainer = Trainer::new(&m.backend, &m.model, job.settings.clone(), examples, state)?;
    shared.post(&Event::TrainStarted {
        id,
        name: job.name.clone(),
        step: trainer.state.step,
        total_steps: trainer.total_steps(),
        train_examples: trainer.train_examples(),
        val_examples: trainer.val_examples(),
        truncated,
    });
    let registered = Registered::new(shared, Arc::new(AtomicBool::new(false)));
    let pause_point = super::event_loop_yield();
    let t0 = js_sys::Date::now();
    let first_step = trainer.state.step;
    let mut tokens = 0usize;
    while !trainer.done() {
        if registered.cancelled() {
            let info = checkpoint_info(&trainer, &job.name, &model_name, &losses);
            save(m, &trainer, &info).await?;
            shared.post(&Event::TrainDone { id, paused: true, step: trainer.state.step, total_steps: trainer.total_steps() });
            return Ok(());
        }
        let report = trainer.step().await.map_err(|e| match e {
            // The device ran out of memory or was lost mid-step: the last checkpoint stands, and a smaller run fits.
            Error::Backend(why) => Error::Training(format!(
                "{why}. The last checkpoint is kept: lower the maximum length, the batch or the rank, then resume"
            )),
            other => other,
        })?;
        tokens += report.tokens;
        let seconds = (js_sys::Date::now() - t0) / 1000.0;
        let done_here = (report.step - first_step) as f64;
        let seconds_left = seconds / done_here.max(1.0) * (report.total_steps - report.step) as f64;
        let checkpoint = report.step % job.checkpoint_every.max(1) == 0 || trainer.done();
        let val_loss = if checkpoint { trainer.validation_loss().await? } else { None };
        losses.push((report.step, report.loss, val_loss));
        shared.post(&Event::TrainStep {
            id,
            progress: TrainProgress { report, val_loss, tokens_per_second: tokens as f64 / seconds.max(1e-3), seconds_left },
        });
        if checkpoint {
            save(m, &trainer, &checkpoint_info(&trainer, &job.name, &model_name, &losses)).await?;
        }
        // Let the message handler hear a pause between steps (the GPU path awaits the device anyway).
        pause_point().await;
    }
    // The adapter in PEFT's layout, as the LoRA loader takes files, fitted to the model like any other.
    let mut file = trainer.state.params.qk_rows_moved(c, c.rope_layout, RopeLayout::SplitHalves);
    file.kind = LoraKind::Peft;
    let adapter = Adapter::new(&m.backend, &m.model, &file, &job.name)?;
    let event = Event::LoraLoaded {
        id: adapter.id,
        name: job.name.clone(),
        info: adapter.info.clone(),
        url: None,
        bytes: adapter.info.parameters * 4,
    };
    adapters.insert_trained(adapter, file, trainer.settings.clone());
    shared.post(&event);
    shared.post(&Event::TrainDone { id, paused: false, step: trainer.state.step, total_steps: trainer.total_steps() });
    Ok(())
}
