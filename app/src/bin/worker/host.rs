//! The worker side of the app: owns the engine and answers `engine::protocol` requests.
//!
//! The message handler runs for every message, even mid-generation (a generation awaits the GPU each token, which
//! gives the event loop a turn). It handles `Cancel` at once and queues everything else for one async task, the
//! *driver*, which does the work in order. The driver keeps a loaded model as a local of `serve`, and the
//! `Session` (which borrows the backend and the model) beside it, so the KV cache and the session's prompt reuse
//! live across turns without leaking or self-referential structs; loading another model returns from `serve`, which
//! drops the session, the model and its GPU buffers before the next load starts.
//!
//! Cancellation uses an epoch: every `Cancel` or `Load` bumps it. Queued requests carry the epoch they were sent in,
//! so ones overtaken by a cancel are skipped; a running load's source checks it before each read; a running
//! generation is stopped through the session's cancel flag.
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

/// What the message handler and the driver share.
struct Shared {
    scope: DedicatedWorkerGlobalScope,
    epoch: Cell<u64>,
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

type Queue = UnboundedReceiver<(u64, Request)>;

/// Installs the message handler, starts the driver and tells the page it is listening.
pub fn start() {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let shared = Rc::new(Shared {
        scope,
        epoch: Cell::new(0),
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
                Request::LoadLora { .. } | Request::LoadLoraFiles if shared.batch_busy() => {
                    shared.post(&Event::LoraError { name: "adapter".into(), message: run_rules::BUSY.into() })
                }
                other => {
                    if matches!(other, Request::Magpie { .. } | Request::Judge { .. } | Request::Synth { .. }) {
                        shared.batch_queued();
                    }
                    if matches!(other, Request::Load { .. } | Request::LoadFiles { .. }) {
                        shared.cancel_all(); // a new model supersedes whatever runs
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

/// The driver: takes requests in order; while a model is loaded, `serve` takes them instead.
async fn drive(shared: Rc<Shared>, mut queue: Queue) {
    let mut next: Option<(u64, Request)> = None;
    loop {
        let Some((epoch, request)) = (match next.take() {
            Some(r) => Some(r),
            None => queue.next().await,
        }) else {
            return;
        };
        match request {
            Request::Load { .. } | Request::LoadFiles { .. } => {
                if epoch != shared.epoch.get() {
                    shared.post(&cancelled_load());
                    continue;
                }
                let (target, backend, context) = match request {
                    Request::Load { url, backend, context } => (Target::Url(url), backend, context),
                    Request::LoadFiles { backend, context } => {
                        (Target::Files(std::mem::take(&mut *shared.picked_files.borrow_mut())), backend, context)
                    }
                    _ => continue,
                };
                match load(&shared, epoch, target, backend, context).await {
                    Ok(AnyLoaded::Gpu(m)) => next = serve(&shared, &m, &mut queue).await,
                    Ok(AnyLoaded::Cpu(m)) => next = serve(&shared, &m, &mut queue).await,
                    Err(Error::Cancelled) => shared.post(&cancelled_load()),
                    Err(e) => shared.post(&Event::Error { id: None, message: e.to_string(), model_lost: true }),
                }
            }
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
        }
    }
}

/// The files of the `LoadLoraFiles` being run (the oldest queued).
fn lora_files(shared: &Shared) -> Vec<web_sys::File> {
    shared.picked_lora_files.borrow_mut().pop_front().unwrap_or_default()
}

/// Why the GPU is not used, for the model card: the backend's own words, without the error kind's prefix.
fn fallback_reason(e: Error) -> String {
    match e {
        Error::Backend(why) => why,
        other => other.to_string(),
    }
}

/// Lists or deletes stored models. These run in the driver's order, so they never race a download for the index.
async fn storage_request(shared: &Shared, request: Request) {
    let event = match request {
        Request::DeleteCached { url } => cached_source::delete(&url).await,
        _ => cached_source::list().await,
    };
    shared.post(&event);
}

fn cancelled_load() -> Event {
    Event::Error { id: None, message: "loading was cancelled".into(), model_lost: true }
}

async fn load(
    shared: &Rc<Shared>,
    epoch: u64,
    target: Target,
    choice: BackendChoice,
    context: Option<usize>,
) -> Result<AnyLoaded> {
    let t0 = js_sys::Date::now();
    let cancelled: aviary_app::http_source::CancelCheck = {
        let shared = shared.clone();
        Rc::new(move || shared.epoch.get() != epoch)
    };
    shared.post(&Event::Progress { stage: Stage::Backend, done: 0, total: 1 });
    let gpu = match choice {
        BackendChoice::Cpu => Err(None),
        BackendChoice::Gpu => Ok(GpuBackend::new(&GpuOptions::default()).await?),
        BackendChoice::Auto => GpuBackend::new(&GpuOptions::default()).await.map_err(|e| Some(fallback_reason(e))),
    };
    shared.post(&Event::Progress { stage: Stage::Header, done: 0, total: 1 });
    let download_progress = |done, total| shared.post(&Event::Progress { stage: Stage::Download, done, total });
    let (files, origin) = cached_source::open_model(target, cancelled.clone(), &download_progress).await?;
    shared.post(&Event::Progress { stage: Stage::Header, done: 1, total: 1 });
    Ok(match gpu {
        Ok(backend) => {
            let info = BackendInfo::Gpu { adapter: backend.adapter().clone(), f16: backend.uses_f16() };
            AnyLoaded::Gpu(Box::new(finish(shared, (files, origin), backend, info, context, t0).await?))
        }
        Err(reason) => AnyLoaded::Cpu(Box::new(
            finish(shared, (files, origin), CpuBackend::new(), BackendInfo::Cpu { reason }, context, t0).await?,
        )),
    })
}

async fn finish<B: Backend>(
    shared: &Shared,
    (mut files, origin): (ModelFiles<Source>, Origin),
    backend: B,
    info: BackendInfo,
    context: Option<usize>,
    t0: f64,
) -> Result<Loaded<B>> {
    let tokenizer = files
        .tokenizer
        .take()
        .ok_or_else(|| Error::Unsupported("this model file has no tokenizer, so it cannot chat".into()))?;
    let template = engine::prompt::chat_template(files.chat_template.as_ref(), &tokenizer, files.config.arch);
    let context = default_context(files.config.max_position_embeddings, context);
    let model = files
        .load(&backend, &mut |done, total| shared.post(&Event::Progress { stage: Stage::Weights, done, total }))
        .await?;
    let stats = LoadStats { load_ms: js_sys::Date::now() - t0, wasm_memory_bytes: wasm_memory_bytes() };
    Ok(Loaded { files, origin, backend, model, tokenizer, template, context, info, stats })
}

/// Answers requests with `m` loaded, until a `Load` asks for another model (returned, to be run next).
async fn serve<B: Backend>(shared: &Shared, m: &Loaded<B>, queue: &mut Queue) -> Option<(u64, Request)> {
    let mut session = match Session::new(&m.backend, &m.model, Some(&m.tokenizer), m.context) {
        Ok(s) => s,
        Err(e) => {
            shared.post(&Event::Error { id: None, message: e.to_string(), model_lost: true });
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
            load @ (Request::Load { .. } | Request::LoadFiles { .. }) => break Some((epoch, load)),
            batch @ (Request::Magpie { .. } | Request::Judge { .. } | Request::Synth { .. }) => {
                runs::run(shared, m, epoch, batch).await;
                shared.batch_ended(epoch);
            }
            Request::Cancel | Request::PreQuery { .. } => {}
            storage @ (Request::ListCache | Request::DeleteCached { .. }) => storage_request(shared, storage).await,
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

/// The size of this worker's wasm memory.
fn wasm_memory_bytes() -> u64 {
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .ok()
        .and_then(|m| m.buffer().dyn_into::<js_sys::ArrayBuffer>().ok())
        .map_or(0, |b| b.byte_length() as u64)
}

fn cancelled_generation() -> Generation {
    Generation { tokens: vec![], text: String::new(), stop_reason: StopReason::Cancelled, stats: Stats::default() }
}
