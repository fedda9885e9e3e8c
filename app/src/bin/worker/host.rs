//! The worker side of the app: owns the engine and answers `engine::protocol` requests.
//!
//! The message handler runs for every message, even mid-generation (a generation awaits the GPU each token, which
//! gives the event loop a turn). It handles `Cancel` at once and queues everything else for one async task, the
//! *driver*, which does the work in order. The driver keeps a loaded model as a local of `serve`, and the
//! `Session` (which borrows the backend and the model) beside it, so the KV cache and the session's prompt reuse
//! live across turns without leaking or self-referential structs.
//!
//! Loading another model goes in two steps, so that a load that fails keeps what works. `open` does everything but
//! the weights — makes the backend, downloads the file into storage, parses its header and tensor index, checks that
//! every tensor lies inside the file, that the architecture is one the engine runs, that there is a tokenizer and
//! that the device can hold it — and runs inside `serve`, while the loaded model stays loaded. A URL that is not a
//! model, a 404 or a truncated file fails there: the page hears `model_lost: false` and the chat goes on. Only what
//! passes is returned from `serve`, which drops the session, the model and its GPU buffers (making room), and the
//! driver then loads its weights; only a failure there leaves no model.
//!
//! Cancellation uses an epoch: every `Cancel` or `Load` bumps it. Queued requests carry the epoch they were sent in,
//! so ones overtaken by a cancel are skipped; a running load's source checks it before each read (and `open` once
//! more at its end, so a cancelled load never replaces the model); a running generation is stopped through the
//! session's cancel flag. A load overtaken by a newer load says nothing: the newer one reports.
//!
//! Batch runs (Magpie, judge, synthesis: runs.rs) hold the model for long: while one is queued or going, a chat or a
//! load is refused at once rather than left waiting behind it, and `PreQuery` is answered by the handler itself.
//!
//! LoRA adapters (lora.rs) are fitted to one model, so they live in `serve` beside it and go with it; each
//! generation names the adapters and scales it applies.

use aviary_app::cached_source::{self, Source, Target};
use aviary_app::run_rules;
use engine::backend::cpu::CpuBackend;
use engine::backend::gpu::{GpuBackend, GpuOptions};
use engine::backend::Backend;
use engine::train::TrainBackend;
use engine::chat::ChatTemplate;
use engine::model::{ModelFiles, Transformer};
use engine::protocol::{default_context, BackendChoice, BackendInfo, Event, LoadStats, ModelCard, Origin, Request, Stage};
use engine::session::{GenerateOptions, Generation, Session, Stats, StopReason};
use engine::tokenizer::Tokenizer;
use engine::{Error, Result};
use futures::channel::mpsc::{unbounded, UnboundedReceiver};
use futures::StreamExt;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

#[path = "lora.rs"]
mod lora;
#[path = "runs.rs"]
mod runs;
#[path = "train.rs"]
mod train;
#[path = "compare.rs"]
mod compare;

/// What the message handler and the driver share.
struct Shared {
    scope: DedicatedWorkerGlobalScope,
    epoch: Cell<u64>,
    /// The epoch of the latest load request.
    load_epoch: Cell<u64>,
    /// The cancel flag of the live session, when a model is loaded.
    generation_cancel: RefCell<Option<Arc<AtomicBool>>>,
    /// The files the latest `LoadFiles` came with (they cannot travel in its JSON). Any load cancels the ones
    /// before it, so the load the driver runs is always the latest, and these are its files.
    picked_files: RefCell<Vec<web_sys::File>>,
    /// The files of each queued `LoadLoraFiles`, in queue order: adapter loads are not superseded by later ones.
    picked_lora_files: RefCell<VecDeque<Vec<web_sys::File>>>,
    /// The cancel flag of the batch run going, if any.
    batch_cancel: RefCell<Option<Arc<AtomicBool>>>,
    /// (epoch, count) of the batch runs queued or going in that epoch: a cancel ends them all, so only the current
    /// epoch's count says the model is taken.
    batches: Cell<(u64, u32)>,
    /// What `PreQuery` derives from, while a model is loaded.
    templates: RefCell<Option<runs::TemplateSource>>,
}

impl Shared {
    fn post(&self, event: &Event) {
        if let Err(e) = self.scope.post_message(&JsValue::from_str(&event.to_json())) {
            web_sys::console::error_2(&"aviary worker: postMessage failed".into(), &e);
        }
    }

    /// Stops whatever runs and whatever is queued.
    fn cancel_all(&self) {
        self.epoch.set(self.epoch.get() + 1);
        if let Some(flag) = self.generation_cancel.borrow().as_ref() {
            flag.store(true, Ordering::Relaxed);
        }
        if let Some(flag) = self.batch_cancel.borrow().as_ref() {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a load sent in `epoch` has been overtaken by a newer load (which reports for both).
    fn superseded(&self, epoch: u64) -> bool {
        self.load_epoch.get() > epoch
    }

    /// Whether a batch run of this epoch is queued or going.
    fn batch_busy(&self) -> bool {
        let (epoch, count) = self.batches.get();
        epoch == self.epoch.get() && count > 0
    }

    fn batch_queued(&self) {
        let (epoch, count) = self.batches.get();
        let now = self.epoch.get();
        self.batches.set(if epoch == now { (now, count + 1) } else { (now, 1) });
    }

    /// A batch request sent in `epoch` has been run (or skipped).
    fn batch_ended(&self, epoch: u64) {
        let (e, count) = self.batches.get();
        if e == epoch {
            self.batches.set((e, count.saturating_sub(1)));
        }
    }
}

/// A batch run's cancel flag (Magpie, judge, synthesis, training, comparing), held in `Shared` for `Cancel` to set
/// while the run goes, and taken out when it ends, however it ends.
struct Registered<'a> {
    shared: &'a Shared,
    flag: Arc<AtomicBool>,
}

impl<'a> Registered<'a> {
    fn new(shared: &'a Shared, flag: Arc<AtomicBool>) -> Self {
        *shared.batch_cancel.borrow_mut() = Some(flag.clone());
        Self { shared, flag }
    }

    fn cancelled(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        *self.shared.batch_cancel.borrow_mut() = None;
    }
}

type Queue = UnboundedReceiver<(u64, Request)>;

/// Installs the message handler, starts the driver and tells the page it is listening.
pub fn start() {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let shared = Rc::new(Shared {
        scope,
        epoch: Cell::new(0),
        load_epoch: Cell::new(0),
        generation_cancel: RefCell::new(None),
        picked_files: RefCell::new(Vec::new()),
        picked_lora_files: RefCell::new(VecDeque::new()),
        batch_cancel: RefCell::new(None),
        batches: Cell::new((0, 0)),
        templates: RefCell::new(None),
    });
    let (tx, rx) = unbounded::<(u64, Request)>();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new({
        let shared = shared.clone();
        move |ev: MessageEvent| {
            let (text, files) = request_and_files(&ev.data());
            let Some(text) = text else {
                shared.post(&Event::error(None, "the worker expects requests as JSON strings"));
                return;
            };
            let request = match Request::from_json(&text) {
                Ok(r) => r,
                Err(e) => return shared.post(&Event::error(None, e)),
            };
            match request {
                Request::Cancel => shared.cancel_all(),
                // Answered here, so a run in progress does not hold it up.
                Request::PreQuery { system_prompt } => shared.post(&runs::pre_query(&shared, system_prompt.as_deref())),
                Request::Generate { id, .. } if shared.batch_busy() => shared.post(&Event::error(Some(id), run_rules::BUSY)),
                Request::Load { .. } | Request::LoadFiles { .. } if shared.batch_busy() => {
                    shared.post(&Event::error(None, run_rules::BUSY))
                }
                Request::Train { id, .. } | Request::Compare { id, .. } if shared.batch_busy() => {
                    shared.post(&Event::error(Some(id), run_rules::BUSY))
                }
                Request::LoadLora { .. } | Request::LoadLoraFiles if shared.batch_busy() => {
                    shared.post(&Event::LoraError { name: "adapter".into(), message: run_rules::BUSY.into() })
                }
                other => {
                    if matches!(
                        other,
                        Request::Magpie { .. }
                            | Request::Judge { .. }
                            | Request::Synth { .. }
                            | Request::Train { .. }
                            | Request::Compare { .. }
                    ) {
                        shared.batch_queued();
                    }
                    if matches!(other, Request::Load { .. } | Request::LoadFiles { .. }) {
                        shared.cancel_all(); // a new model supersedes whatever runs
                        shared.load_epoch.set(shared.epoch.get());
                    }
                    if matches!(other, Request::LoadFiles { .. }) {
                        *shared.picked_files.borrow_mut() = files;
                    } else if matches!(other, Request::LoadLoraFiles) {
                        shared.picked_lora_files.borrow_mut().push_back(files);
                    }
                    // The driver lives as long as the worker, so the queue is never closed.
                    let _ = tx.unbounded_send((shared.epoch.get(), other));
                }
            }
        }
    });
    shared.scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    on_message.forget();
    wasm_bindgen_futures::spawn_local(drive(shared.clone(), rx));
    shared.post(&Event::Started);
}

/// A message is a JSON request string, or `{request: string, files: [File…]}` when files travel with it.
fn request_and_files(data: &JsValue) -> (Option<String>, Vec<web_sys::File>) {
    if let Some(text) = data.as_string() {
        return (Some(text), Vec::new());
    }
    let get = |k: &str| js_sys::Reflect::get(data, &k.into()).ok();
    let text = get("request").and_then(|r| r.as_string());
    let files = get("files")
        .filter(js_sys::Array::is_array)
        .map(|f| js_sys::Array::from(&f).iter().filter_map(|f| f.dyn_into::<web_sys::File>().ok()).collect())
        .unwrap_or_default();
    (text, files)
}

/// A model on one backend, with what generation needs besides the weights.
struct Loaded<B: Backend> {
    files: ModelFiles<Source>,
    origin: Origin,
    backend: B,
    model: Transformer<B>,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    context: usize,
    info: BackendInfo,
    stats: LoadStats,
}

enum AnyLoaded {
    Gpu(Box<Loaded<GpuBackend>>),
    Cpu(Box<Loaded<CpuBackend>>),
}

/// The driver: takes requests in order; while a model is loaded, `serve` takes them instead, and returns the next
/// model once it is opened and checked.
async fn drive(shared: Rc<Shared>, mut queue: Queue) {
    // The threaded build's CPU threads start before any request is served (messages wait in the queue meanwhile);
    // without them the kernels run on this thread alone.
    #[cfg(target_feature = "atomics")]
    if let Err(why) = crate::pool::start().await {
        web_sys::console::warn_1(&format!("aviary worker: the CPU runs on one thread: {why}").into());
    }
    let mut opened: Option<Opened> = None;
    loop {
        if let Some(next) = opened.take() {
            opened = load_and_serve(&shared, next, &mut queue).await;
            continue;
        }
        let Some((epoch, request)) = queue.next().await else { return };
        match request {
            load @ (Request::Load { .. } | Request::LoadFiles { .. }) => opened = open_or_report(&shared, epoch, load, false).await,
            Request::Generate { id, .. } => shared.post(&Event::error(Some(id), "no model is loaded")),
            Request::Magpie { id, .. } | Request::Judge { id, .. } | Request::Synth { id, .. } => {
                shared.batch_ended(epoch);
                shared.post(&Event::error(Some(id), "no model is loaded"));
            }
            Request::Cancel | Request::PreQuery { .. } => {}
            storage @ (Request::ListCache | Request::DeleteCached { .. }) => storage_request(&shared, storage).await,
            Request::LoadLora { url } => shared.post(&lora::no_model(&lora::Origin::Url(url))),
            Request::LoadLoraFiles => shared.post(&lora::no_model(&lora::Origin::Files(lora_files(&shared)))),
            Request::RemoveLora { id } => shared.post(&Event::LoraRemoved { id }),
            Request::Train { id, .. } | Request::Compare { id, .. } => {
                shared.batch_ended(epoch);
                shared.post(&Event::error(Some(id), "no model is loaded"));
            }
            Request::ExportAdapter { .. } => {
                shared.post(&Event::error(None, "the adapter went with the model it was trained on: train it again"))
            }
            checkpoints @ (Request::ListCheckpoints | Request::DeleteCheckpoint { .. }) => {
                checkpoint_request(&shared, checkpoints).await
            }
        }
    }
}

/// Loads the weights of a model that passed `open` (no other model holds the device now) and serves it, until it
/// returns the next model opened.
async fn load_and_serve(shared: &Rc<Shared>, opened: Opened, queue: &mut Queue) -> Option<Opened> {
    let epoch = opened.epoch;
    match load(shared, opened).await {
        Ok(AnyLoaded::Gpu(m)) => serve(shared, &m, queue).await,
        Ok(AnyLoaded::Cpu(m)) => serve(shared, &m, queue).await,
        Err(Error::Cancelled) if shared.superseded(epoch) => None,
        Err(e) => {
            shared.post(&Event::load_error(&e, true));
            None
        }
    }
}

/// Opens and checks the model `request` names; a failure is reported, and with `model_loaded` it leaves that model
/// loaded (`model_lost: false`).
async fn open_or_report(shared: &Rc<Shared>, epoch: u64, request: Request, model_loaded: bool) -> Option<Opened> {
    let result = if epoch == shared.epoch.get() { open(shared, epoch, request).await } else { Err(Error::Cancelled) };
    match result {
        Ok(opened) => Some(opened),
        Err(Error::Cancelled) if shared.superseded(epoch) => None,
        Err(e) => {
            shared.post(&Event::load_error(&e, !model_loaded));
            None
        }
    }
}

/// The files of the `LoadLoraFiles` being run (the oldest queued).
fn lora_files(shared: &Shared) -> Vec<web_sys::File> {
    shared.picked_lora_files.borrow_mut().pop_front().unwrap_or_default()
}

/// Why the GPU is not used, for the model card: the backend's own words, without the error kind's prefix.
fn fallback_reason(e: Error) -> String {
    let why = match e {
        Error::Backend(why) => why,
        other => other.to_string(),
    };
    format!("WebGPU unavailable: {why}")
}

/// Auto's choice: WebGPU, unless the browser's adapter is a software rasteriser (SwiftShader, llvmpipe, WARP), where
/// the CPU path runs the same model several times faster (BENCHMARKS.md); the reason says so and how to force WebGPU.
async fn auto_device() -> Device {
    if let Some(name) = aviary_app::gpu_probe::software_adapter().await {
        let why = format!(
            "Auto chose the CPU: the browser's WebGPU adapter is a software one ({name}), slower than the CPU path; \
             choose WebGPU in the Device panel to use it anyway"
        );
        return Device::Cpu(CpuBackend::new(), Some(why));
    }
    match GpuBackend::new(&GpuOptions::default()).await {
        Ok(gpu) => Device::Gpu(Box::new(gpu)),
        Err(e) => Device::Cpu(CpuBackend::new(), Some(fallback_reason(e))),
    }
}

/// Lists training checkpoints, or deletes one and lists what is left.
async fn checkpoint_request(shared: &Shared, request: Request) {
    if let Request::DeleteCheckpoint { name } = &request {
        aviary_app::train_store::delete(name).await;
    }
    shared.post(&Event::Checkpoints { runs: aviary_app::train_store::list().await });
}

/// Lists or deletes stored models. These run in the driver's order, so they never race a download for the index.
async fn storage_request(shared: &Shared, request: Request) {
    let event = match request {
        Request::DeleteCached { url } => cached_source::delete(&url).await,
        _ => cached_source::list().await,
    };
    shared.post(&event);
}

/// The device a load runs on, made in `open` (it holds nothing until the weights come).
enum Device {
    Gpu(Box<GpuBackend>),
    /// With why the GPU is not used (None when the CPU was asked for).
    Cpu(CpuBackend, Option<String>),
}

/// A model opened and checked while the previous one stayed loaded: only its weights are left to load.
struct Opened {
    epoch: u64,
    device: Device,
    model: Checked,
}

/// What `open` found and checked of a model's files.
struct Checked {
    files: ModelFiles<Source>,
    tokenizer: Tokenizer,
    origin: Origin,
    context: Option<usize>,
    /// When the load began (`Date.now()`, ms).
    t0: f64,
}

/// Everything of a load but the weights (see the module's doc): what fails here leaves any loaded model loaded.
async fn open(shared: &Rc<Shared>, epoch: u64, request: Request) -> Result<Opened> {
    let (target, choice, context) = match request {
        Request::Load { url, backend, context } => (Target::Url(url), backend, context),
        Request::LoadFiles { backend, context } => {
            (Target::Files(std::mem::take(&mut *shared.picked_files.borrow_mut())), backend, context)
        }
        _ => return Err(Error::InvalidArgument("only a load request opens a model".into())),
    };
    let t0 = js_sys::Date::now();
    let cancelled: aviary_app::http_source::CancelCheck = {
        let shared = shared.clone();
        Rc::new(move || shared.epoch.get() != epoch)
    };
    shared.post(&Event::Progress { stage: Stage::Backend, done: 0, total: 1 });
    let device = match choice {
        BackendChoice::Cpu => Device::Cpu(CpuBackend::new(), None),
        BackendChoice::Gpu => Device::Gpu(Box::new(GpuBackend::new(&GpuOptions::default()).await?)),
        BackendChoice::Auto => auto_device().await,
    };
    shared.post(&Event::Progress { stage: Stage::Header, done: 0, total: 1 });
    let download_progress = |done, total| shared.post(&Event::Progress { stage: Stage::Download, done, total });
    let (mut files, origin) = cached_source::open_model(target, cancelled.clone(), &download_progress).await?;
    let tokenizer = files
        .tokenizer
        .take()
        .ok_or_else(|| Error::Tokenizer("this model file has no tokenizer, so it cannot chat".into()))?;
    match &device {
        Device::Gpu(gpu) => files.check_capacity(gpu.as_ref())?,
        Device::Cpu(cpu, _) => files.check_capacity(cpu)?,
    }
    // A cancel (or a newer load) that came while the last await ran must not let this one replace the model.
    if cancelled() {
        return Err(Error::Cancelled);
    }
    shared.post(&Event::Progress { stage: Stage::Header, done: 1, total: 1 });
    Ok(Opened { epoch, device, model: Checked { files, tokenizer, origin, context, t0 } })
}

/// Loads the weights of an opened model.
async fn load(shared: &Shared, opened: Opened) -> Result<AnyLoaded> {
    Ok(match opened.device {
        Device::Gpu(backend) => {
            let info = BackendInfo::Gpu { adapter: backend.adapter().clone(), f16: backend.uses_f16() };
            AnyLoaded::Gpu(Box::new(finish(shared, opened.model, *backend, info).await?))
        }
        Device::Cpu(backend, reason) => {
            AnyLoaded::Cpu(Box::new(finish(shared, opened.model, backend, BackendInfo::Cpu {
                reason,
                simd128: cfg!(target_feature = "simd128"),
                fused_madd: engine::backend::cpu::fused_madd(),
                threads: engine::backend::cpu::threads() as u32,
            }).await?))
        }
    })
}

async fn finish<B: Backend>(shared: &Shared, model: Checked, backend: B, info: BackendInfo) -> Result<Loaded<B>> {
    let Checked { files, tokenizer, origin, context, t0 } = model;
    let template = engine::prompt::chat_template(files.chat_template.as_ref(), &tokenizer, files.config.arch);
    let context = default_context(files.config.max_position_embeddings, context);
    // A tensor at a time is hundreds of events for the page to draw while it shares the CPU with this load: one
    // every 50 ms is as smooth.
    let mut posted_at = f64::NEG_INFINITY;
    let model = files
        .load(&backend, &mut |done, total| {
            let now = js_sys::Date::now();
            if done == total || now - posted_at >= 50.0 {
                posted_at = now;
                shared.post(&Event::Progress { stage: Stage::Weights, done, total });
            }
        })
        .await;
    files.sources.iter().for_each(Source::release);
    let model = model?;
    let stats = LoadStats { load_ms: js_sys::Date::now() - t0, wasm_memory_bytes: wasm_memory_bytes() };
    Ok(Loaded { files, origin, backend, model, tokenizer, template, context, info, stats })
}

/// Answers requests with `m` loaded, until a `Load` names another model that opens and passes its checks (returned,
/// for its weights to be loaded once `m` is dropped). A load that fails its checks leaves `m` serving.
async fn serve<B: TrainBackend>(shared: &Rc<Shared>, m: &Loaded<B>, queue: &mut Queue) -> Option<Opened> {
    let mut session = match Session::new(&m.backend, &m.model, Some(&m.tokenizer), m.context) {
        Ok(s) => s,
        Err(e) => {
            shared.post(&Event::load_error(&e, true));
            return None;
        }
    };
    *shared.generation_cancel.borrow_mut() = Some(session.cancel_flag());
    if matches!(m.info, BackendInfo::Cpu { .. }) {
        // The GPU path awaits a buffer map every token, which already gives the event loop a turn.
        session.yield_hook = Some(event_loop_yield());
    }
    let card = ModelCard::new(&m.files, m.template.source(), m.context);
    *shared.templates.borrow_mut() = Some(runs::TemplateSource::new(m, &card));
    shared.post(&Event::Ready { card, backend: m.info.clone(), stats: m.stats, origin: Some(m.origin.clone()) });
    let mut adapters = lora::Adapters::<B>::new();
    let next = loop {
        let Some((epoch, request)) = queue.next().await else { break None };
        match request {
            Request::Generate { id, messages, options } => {
                if epoch != shared.epoch.get() {
                    shared.post(&Event::Done { id, generation: cancelled_generation() });
                    continue;
                }
                generate(shared, m, &mut session, &adapters, id, &messages, &options).await;
            }
            Request::LoadLora { url } => shared.post(&adapters.load(m, lora::Origin::Url(url)).await),
            Request::LoadLoraFiles => {
                let files = lora_files(shared);
                shared.post(&adapters.load(m, lora::Origin::Files(files)).await)
            }
            Request::RemoveLora { id } => {
                adapters.remove(id);
                shared.post(&Event::LoraRemoved { id });
            }
            load @ (Request::Load { .. } | Request::LoadFiles { .. }) => {
                if let Some(opened) = open_or_report(shared, epoch, load, true).await {
                    break Some(opened);
                }
            }
            batch @ (Request::Magpie { .. } | Request::Judge { .. } | Request::Synth { .. }) => {
                runs::run(shared, m, epoch, batch).await;
                shared.batch_ended(epoch);
            }
            Request::Cancel | Request::PreQuery { .. } => {}
            storage @ (Request::ListCache | Request::DeleteCached { .. }) => storage_request(shared, storage).await,
            Request::Train { id, job, resume } => {
                train::run(shared, m, &mut adapters, epoch, id, job, resume).await;
                shared.batch_ended(epoch);
            }
            Request::Compare { id, instructions, a, b, max_tokens, teacher, judge, references } => {
                if epoch == shared.epoch.get() {
                    let ask = compare::Ask {
                        id,
                        instructions: &instructions,
                        sides: [&a, &b],
                        max_tokens,
                        teacher: teacher.as_deref(),
                        judge,
                        references: &references,
                    };
                    compare::run(shared, m, &mut session, &adapters, ask).await;
                } else {
                    shared.post(&Event::CompareDone { id, cancelled: true });
                }
                shared.batch_ended(epoch);
            }
            Request::ExportAdapter { id, format } => shared.post(&adapters.export(m, id, format)),
            checkpoints @ (Request::ListCheckpoints | Request::DeleteCheckpoint { .. }) => {
                checkpoint_request(shared, checkpoints).await
            }
        }
    };
    *shared.generation_cancel.borrow_mut() = None;
    *shared.templates.borrow_mut() = None;
    next
}

async fn generate<B: Backend>(
    shared: &Shared,
    m: &Loaded<B>,
    session: &mut Session<'_, B>,
    adapters: &lora::Adapters<B>,
    id: u64,
    messages: &[engine::chat::Message],
    options: &GenerateOptions,
) {
    // The adapters apply from the prompt on; a different set than the last turn's starts the cache again.
    if let Err(e) = adapters.stack(&options.lora).and_then(|stack| session.set_lora(stack)) {
        return shared.post(&Event::error(Some(id), e));
    }
    let prompt = match engine::prompt::encode_chat(&m.template, &m.tokenizer, messages) {
        Ok(p) => p,
        Err(e) => return shared.post(&Event::error(Some(id), e)),
    };
    if prompt.len() >= session.max_positions() {
        let message = format!(
            "the conversation is {} tokens long, and this session holds {}: start a new chat",
            prompt.len(),
            session.max_positions()
        );
        return shared.post(&Event::error(Some(id), message));
    }
    let result = session
        .generate_with_info(&prompt, options, &mut |token, text, info| {
            shared.post(&Event::Token { id, token, text: text.to_string(), info: info.cloned() })
        })
        .await;
    match result {
        Ok(generation) => shared.post(&Event::Done { id, generation }),
        Err(e) => {
            // The session may hold a half-written cache: start the next turn from scratch.
            let _ = session.reset();
            shared.post(&Event::error(Some(id), e));
        }
    }
}

#[wasm_bindgen]
extern "C" {
    type MessageChannel;
    #[wasm_bindgen(constructor)]
    fn new() -> MessageChannel;
    #[wasm_bindgen(method, getter)]
    fn port1(this: &MessageChannel) -> MessagePort;
    #[wasm_bindgen(method, getter)]
    fn port2(this: &MessageChannel) -> MessagePort;
    type MessagePort;
    #[wasm_bindgen(method, setter)]
    fn set_onmessage(this: &MessagePort, handler: &js_sys::Function);
    #[wasm_bindgen(method, js_name = postMessage)]
    fn post_message(this: &MessagePort, message: &JsValue);
}

/// A hook for `Session::yield_hook` that lets the worker's event loop run (and its message handler hear a Cancel)
/// before it resolves. A message to itself over a MessageChannel comes back as a new task after whatever is queued,
/// without the 4 ms that browsers add to nested `setTimeout(0)`s.
fn event_loop_yield() -> engine::session::YieldHook {
    let channel = MessageChannel::new();
    Box::new(move || {
        #[cfg(target_feature = "atomics")]
        crate::pool::stay_hot();
        let (port1, port2) = (channel.port1(), channel.port2());
        let woken = js_sys::Promise::new(&mut |resolve, _reject| {
            port1.set_onmessage(&resolve);
            port2.post_message(&JsValue::UNDEFINED);
        });
        Box::pin(async move {
            // The promise only resolves; there is nothing to report if it did not.
            let _ = wasm_bindgen_futures::JsFuture::from(woken).await;
        })
    })
}

/// The size of this worker's wasm memory (shared with its CPU threads in the threaded build).
fn wasm_memory_bytes() -> u64 {
    let Ok(memory) = wasm_bindgen::memory().dyn_into::<js_sys::WebAssembly::Memory>() else { return 0 };
    let buffer = memory.buffer();
    let bytes = match buffer.dyn_ref::<js_sys::ArrayBuffer>() {
        Some(b) => b.byte_length(),
        None => buffer.dyn_ref::<js_sys::SharedArrayBuffer>().map_or(0, |b| b.byte_length()),
    };
    bytes as u64
}

fn cancelled_generation() -> Generation {
    Generation { tokens: vec![], text: String::new(), stop_reason: StopReason::Cancelled, stats: Stats::default() }
}
