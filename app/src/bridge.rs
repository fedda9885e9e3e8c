//! The typed channel to the worker that hosts the engine: requests out, events in, both `engine::protocol` enums
//! as JSON strings. Requests sent before the worker says `Started` wait in a queue (a worker drops messages that
//! arrive before its handler is installed). Events update the state signals; components never touch the worker.
//! Batch runs (Magpie, judge, synthesis) have their requests and events in `runs`, LoRA adapters in `lora`.

pub mod lora;
pub mod runs;
pub mod train;

use crate::state::{Chat, DatasetState, LoraState, ModelState, Progress, Reply, Role, Status, Storage};
use engine::protocol::{BackendInfo, Event, LoadStats, ModelCard, Request};
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, Worker};

struct Inner {
    worker: Option<Worker>,
    started: bool,
    queue: Vec<Request>,
    /// The loaded model's card, device and load stats, for a load that fails before it replaces the model: the page
    /// clears the card when a load starts, and puts this back.
    loaded: Option<(ModelCard, BackendInfo, Option<LoadStats>)>,
}

/// A handle to the worker (Copy, so any closure can hold one).
#[derive(Clone, Copy)]
pub struct Bridge(StoredValue<Inner, LocalStorage>);

impl Bridge {
    /// Starts the worker and wires its events to the state in context.
    pub fn start() -> Bridge {
        let bridge = Bridge(StoredValue::new_local(Inner { worker: None, started: false, queue: Vec::new(), loaded: None }));
        let model = expect_context::<ModelState>();
        let chat = expect_context::<Chat>();
        let storage = expect_context::<Storage>();
        let dataset = expect_context::<DatasetState>();
        let adapters = expect_context::<LoraState>();
        let training = expect_context::<crate::state::TrainState>();
        let comparing = expect_context::<crate::state::CompareState>();
        let asked = (crate::app::query_param("simd"), crate::app::query_param("threads"));
        match Worker::new(worker_build(asked.0.as_deref(), asked.1.as_deref())) {
            Ok(worker) => {
                let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                    let Some(text) = ev.data().as_string() else { return };
                    match Event::from_json(&text) {
                        Ok(event) => {
                            on_storage_event(&event, bridge, storage);
                            runs::on_event(&event, dataset, model);
                            lora::on_event(&event, bridge, adapters);
                            train::on_event(&event, bridge, training, comparing);
                            bridge.on_event(event, model, chat)
                        }
                        Err(e) => web_sys::console::error_1(&format!("aviary: bad event from the worker: {e}").into()),
                    }
                });
                worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
                on_message.forget(); // as long as the page
                let on_error = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |ev: web_sys::ErrorEvent| {
                    model.status.set(Status::Failed(format!("the engine's worker failed: {}", ev.message())));
                });
                worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
                on_error.forget();
                bridge.0.update_value(|b| b.worker = Some(worker));
            }
            Err(e) => model.status.set(Status::Failed(format!("could not start the engine's worker: {e:?}"))),
        }
        bridge
    }

    /// Sends `request` with files beside it (`postMessage` carries `File`s, which JSON cannot). Files are not
    /// queued: they are picked by hand, long after the worker starts.
    pub fn send_with_files(&self, request: Request, files: Vec<web_sys::File>) -> Result<(), String> {
        self.0.with_value(|b| match (&b.worker, b.started) {
            (Some(w), true) => {
                let list = js_sys::Array::new();
                for f in &files {
                    list.push(f);
                }
                let message = js_sys::Object::new();
                let _ = js_sys::Reflect::set(&message, &"request".into(), &request.to_json().into());
                let _ = js_sys::Reflect::set(&message, &"files".into(), &list);
                w.post_message(&message).map_err(|e| format!("could not send the files to the engine: {e:?}"))
            }
            _ => Err("the engine is still starting: try again in a moment".into()),
        })
    }

    pub fn send(&self, request: Request) {
        self.0.update_value(|b| match (&b.worker, b.started) {
            (Some(w), true) => post(w, &request),
            _ => b.queue.push(request),
        });
    }

    fn on_event(&self, event: Event, model: ModelState, chat: Chat) {
        match event {
            Event::Started => self.0.update_value(|b| {
                b.started = true;
                if let Some(w) = &b.worker {
                    for r in b.queue.drain(..) {
                        post(w, &r);
                    }
                }
                if model.status.get_untracked() == Status::Starting {
                    model.status.set(Status::Empty);
                }
            }),
            Event::Progress { stage, done, total } => {
                let now = js_sys::Date::now();
                model.status.set(Status::Loading);
                model.progress.update(|p| {
                    let started_ms = match p {
                        Some(p) if p.stage == stage => p.started_ms,
                        _ => now,
                    };
                    *p = Some(Progress { stage, done, total, started_ms, now_ms: now });
                });
            }
            Event::Ready { card, backend, stats, .. } => {
                self.0.update_value(|b| b.loaded = Some((card.clone(), backend.clone(), Some(stats))));
                model.load_error.set(None);
                model.notice.set(None);
                model.card.set(Some(card));
                model.backend.set(Some(backend));
                model.load.set(Some(stats));
                model.progress.set(None);
                model.status.set(Status::Ready);
            }
            Event::Token { id, token, text, info } => {
                if let Some(m) = chat.reply(id) {
                    m.text.update(|t| t.push_str(&text));
                    if !text.is_empty() {
                        m.tokens.update(|c| c.push(crate::state::TokenChip { token, text, info }));
                    }
                }
            }
            Event::Done { id, generation } => {
                if let Some(m) = chat.reply(id) {
                    // The whole reply as the engine has it (the streamed pieces add up to it).
                    m.text.set(generation.text);
                    m.stats.set(Some(generation.stats));
                    m.reply.set(Reply::Done(generation.stop_reason));
                }
                finish_generation(id, model, chat);
            }
            Event::Cache { .. }
            | Event::PreQuery { .. }
            | Event::MagpieRow { .. }
            | Event::Tagged { .. }
            | Event::SynthChunk { .. }
            | Event::BatchDone { .. }
            | Event::LoraLoaded { .. }
            | Event::LoraError { .. }
            | Event::LoraRemoved { .. }
            | Event::TrainStarted { .. }
            | Event::TrainStep { .. }
            | Event::TrainDone { .. }
            | Event::Checkpoints { .. }
            | Event::AdapterFile { .. }
            | Event::Compared { .. }
            | Event::CompareLoading { .. }
            | Event::CompareScored { .. }
            | Event::CompareDone { .. } => {}
            Event::Error { id, message, model_lost, detail } => {
                if let Some(id) = id {
                    if let Some(m) = chat.reply(id) {
                        m.reply.set(Reply::Failed(message.clone()));
                    }
                    finish_generation(id, model, chat);
                }
                let loading = id.is_none() && model.status.get_untracked() == Status::Loading;
                if model_lost {
                    self.0.update_value(|b| b.loaded = None);
                    model.card.set(None);
                    model.backend.set(None);
                    model.progress.set(None);
                    model.status.set(Status::Failed(message.clone()));
                    if id.is_none() {
                        model.load_error.set(Some((message, detail)));
                    }
                } else if loading {
                    // The load failed before it replaced the model: the one loaded before still answers.
                    web_sys::console::warn_1(&format!("aviary: {message} ({})", detail.as_deref().unwrap_or("")).into());
                    model.progress.set(None);
                    match self.0.with_value(|b| b.loaded.clone()) {
                        Some((card, backend, stats)) => {
                            model.card.set(Some(card));
                            model.backend.set(Some(backend));
                            model.load.set(stats);
                            model.status.set(Status::Ready);
                        }
                        None => model.status.set(Status::Empty),
                    }
                    model.load_error.set(Some((message, detail)));
                } else if id.is_none() {
                    web_sys::console::error_1(&format!("aviary: {message}").into());
                    model.notice.set(Some(message));
                }
            }
        }
    }
}

/// The storage side of events: the stored models' list, and where a loaded model came from. A load may have
/// downloaded a model (or an adapter), so each `Ready` (and each adapter loaded by URL) asks for the list again.
fn on_storage_event(event: &Event, bridge: Bridge, storage: Storage) {
    match event {
        Event::Started => bridge.send(Request::ListCache),
        Event::Ready { origin, .. } => {
            storage.origin.set(origin.clone());
            bridge.send(Request::ListCache);
        }
        Event::LoraLoaded { url: Some(_), .. } => bridge.send(Request::ListCache),
        Event::Error { id: None, model_lost, .. } => {
            // A failed load deletes what it had stored (a download that is not a model, or is cut short).
            if *model_lost {
                storage.origin.set(None);
            }
            bridge.send(Request::ListCache);
        }
        Event::Cache { entries, store, note } => {
            storage.entries.set(entries.clone());
            storage.store.set(*store);
            storage.note.set(note.clone());
            storage.listed.set(true);
            crate::components::storage::refresh_estimate(storage);
        }
        _ => {}
    }
}

fn finish_generation(id: u64, model: ModelState, chat: Chat) {
    if chat.streaming.get_untracked() == Some(id) {
        chat.streaming.set(None);
        if model.status.get_untracked() == Status::Generating {
            model.status.set(Status::Ready);
        }
    }
}

/// The worker's loader for this browser: the build with SIMD128 and relaxed SIMD where it validates both (its
/// relaxed multiply-add makes the CPU kernels' fused multiply-adds one instruction where the engine fuses it) — with
/// threads too where the page is cross-origin isolated (shared memory) on more than one core — the SIMD128 one where
/// it validates only that, else the portable one; only that one is fetched. `?simd=128` stops at the SIMD128 build,
/// `?simd=0` at the portable one and `?threads=1` at the single-thread relaxed one (for comparing them).
fn worker_build(simd: Option<&str>, threads: Option<&str>) -> &'static str {
    let most = match simd {
        Some("0") => 0,
        Some("128") => 1,
        _ => 2,
    };
    let relaxed = most >= 2 && validates(&RELAXED_SIMD_PROBE);
    if relaxed && threads != Some("1") && shared_memory() {
        "./worker-threads_loader.js"
    } else if relaxed {
        "./worker-relaxed_loader.js"
    } else if most >= 1 && validates(&SIMD128_PROBE) {
        "./worker-simd_loader.js"
    } else {
        "./worker_loader.js"
    }
}

/// Whether workers can share wasm memory here and there is more than one core to share the work with.
fn shared_memory() -> bool {
    let global = js_sys::global();
    let isolated = js_sys::Reflect::get(&global, &"crossOriginIsolated".into()).is_ok_and(|v| v.is_truthy());
    let cores = web_sys::window().map_or(1.0, |w| w.navigator().hardware_concurrency());
    isolated && cores > 1.0
}

fn validates(module: &[u8]) -> bool {
    js_sys::WebAssembly::validate(&js_sys::Uint8Array::from(module)).unwrap_or(false)
}

/// The smallest module that uses a v128 instruction: valid where the browser runs wasm SIMD128.
#[rustfmt::skip]
const SIMD128_PROBE: [u8; 29] = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b,       // type section: one type, func () -> v128 (0x7b)
    0x03, 0x02, 0x01, 0x00,                         // function section: one function of type 0
    0x0a, 0x08, 0x01, 0x06, 0x00,                   // code section: one body of 6 bytes, no locals:
    0x41, 0x00,                                     //   i32.const 0
    0xfd, 0x0f,                                     //   i8x16.splat (SIMD prefix 0xfd, opcode 15)
    0x0b,                                           //   end
];

/// The same with f32x4.relaxed_madd on three splats: valid where the browser runs relaxed SIMD too.
#[rustfmt::skip]
const RELAXED_SIMD_PROBE: [u8; 40] = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b,       // type section: one type, func () -> v128
    0x03, 0x02, 0x01, 0x00,                         // function section: one function of type 0
    0x0a, 0x13, 0x01, 0x11, 0x00,                   // code section: one body of 17 bytes, no locals:
    0x41, 0x00, 0xfd, 0x0f,                         //   i32.const 0, i8x16.splat
    0x41, 0x00, 0xfd, 0x0f,                         //   i32.const 0, i8x16.splat
    0x41, 0x00, 0xfd, 0x0f,                         //   i32.const 0, i8x16.splat
    0xfd, 0x85, 0x02,                               //   f32x4.relaxed_madd (opcode 261, LEB128)
    0x0b,                                           //   end
];

fn post(worker: &Worker, request: &Request) {
    if let Err(e) = worker.post_message(&JsValue::from_str(&request.to_json())) {
        web_sys::console::error_2(&"aviary: postMessage to the worker failed".into(), &e);
    }
}

/// How many of the likeliest tokens each generated token comes with (the token view's popup).
const TOKEN_CANDIDATES: usize = 5;

/// Appends a user message and an empty assistant reply, and asks the worker to generate it.
pub fn send_user_message(bridge: Bridge, text: String) {
    let chat = expect_context::<Chat>();
    let user = chat.new_message(Role::User, &text, Reply::Done(engine::session::StopReason::StopToken));
    chat.messages.update(|m| m.push(user));
    generate_reply(bridge);
}

/// Replaces the last reply with a new one to the same conversation.
pub fn regenerate(bridge: Bridge) {
    let chat = expect_context::<Chat>();
    if chat.streaming.get_untracked().is_some() {
        return;
    }
    let last_is_reply = chat.messages.with_untracked(|m| m.last().is_some_and(|m| m.role == Role::Assistant));
    if !last_is_reply {
        return;
    }
    chat.messages.update(|m| {
        m.pop();
    });
    generate_reply(bridge);
}

/// Replaces the last user message's text with `text`, drops what followed it, and generates a new reply.
pub fn edit_last(bridge: Bridge, text: String) {
    let chat = expect_context::<Chat>();
    if chat.streaming.get_untracked().is_some() {
        return;
    }
    let Some(at) = chat.messages.with_untracked(|m| m.iter().rposition(|m| m.role == Role::User)) else { return };
    chat.messages.update(|m| {
        m.truncate(at + 1);
        m[at].text.set(text);
    });
    generate_reply(bridge);
}

/// Appends an empty assistant reply to the conversation and asks the worker to generate it.
fn generate_reply(bridge: Bridge) {
    let chat = expect_context::<Chat>();
    let model = expect_context::<ModelState>();
    let settings = expect_context::<crate::state::Settings>();
    let reply = chat.new_message(Role::Assistant, "", Reply::Streaming);
    let id = reply.id;
    let (lora, labels) = lora::choices(expect_context::<LoraState>());
    reply.lora.set(labels);
    let mut messages = Vec::new();
    let system = settings.system_prompt.get_untracked();
    if !system.trim().is_empty() {
        messages.push(engine::chat::Message::system(system));
    }
    chat.messages.with_untracked(|all| {
        for m in all {
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            messages.push(engine::chat::Message::new(role, m.text.get_untracked()));
        }
    });
    chat.messages.update(|m| m.push(reply));
    chat.streaming.set(Some(id));
    model.status.set(Status::Generating);
    let options = engine::session::GenerateOptions {
        max_tokens: settings.max_tokens.get_untracked(),
        sampling: untrack(|| settings.sampling()),
        candidates: TOKEN_CANDIDATES,
        lora,
        ..Default::default()
    };
    bridge.send(Request::Generate { id, messages, options });
}
