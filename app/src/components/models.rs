//! Loading a model: its URL, the Load button, local files (a picker, a folder picker, drag and drop), progress
//! (bytes, speed, time left), the card of what is loaded, and beneath them the catalog and the stored models.

use crate::bridge::Bridge;
use crate::components::{catalog::Catalog, status::LoadError, storage::StoragePanel};
use crate::format;
use crate::state::{BackendPreference, Chat, LoraState, ModelState, Status, Storage};
use engine::protocol::{BackendInfo, Origin, Request, Stage};
use leptos::prelude::*;
use wasm_bindgen::JsCast;

/// `url` made absolute against the page, as the worker keys its stored models.
pub fn absolute(url: &str) -> String {
    aviary_app::js::absolute_url(url)
}

/// Fills the URL box with `url` and loads it.
pub fn load_url(url: String) {
    if crate::bridge::runs::refuse_while_running() {
        return;
    }
    let model = expect_context::<ModelState>();
    let chat = expect_context::<Chat>();
    let bridge = expect_context::<Bridge>();
    chat.streaming.set(None);
    model.url.set(url.clone());
    model.status.set(Status::Loading);
    model.card.set(None);
    model.load_error.set(None);
    bridge.send(Request::Load { url, backend: expect_context::<BackendPreference>().0.get_untracked(), context: None });
}

/// Loads the model in `files` (one .gguf, or a Hugging Face folder's files).
fn load_files(files: Vec<web_sys::File>) {
    let model = expect_context::<ModelState>();
    let chat = expect_context::<Chat>();
    let bridge = expect_context::<Bridge>();
    if files.is_empty() || crate::bridge::runs::refuse_while_running() {
        return;
    }
    chat.streaming.set(None);
    match bridge.send_with_files(Request::LoadFiles { backend: expect_context::<BackendPreference>().0.get_untracked(), context: None }, files) {
        Ok(()) => {
            model.status.set(Status::Loading);
            model.card.set(None);
            model.load_error.set(None);
        }
        Err(e) => model.status.set(Status::Failed(e)),
    }
}

fn file_list(list: Option<web_sys::FileList>) -> Vec<web_sys::File> {
    let Some(list) = list else { return Vec::new() };
    (0..list.length()).filter_map(|i| list.get(i)).collect()
}

/// The files an `<input type=file>` holds, then empties it so picking the same file again fires `change` again.
fn take_input_files(ev: &leptos::ev::Event) -> Vec<web_sys::File> {
    let Some(input) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok()) else {
        return Vec::new();
    };
    let files = file_list(input.files());
    input.set_value("");
    files
}

#[component]
pub fn ModelsView() -> impl IntoView {
    let model = expect_context::<ModelState>();
    let chat = expect_context::<Chat>();
    let bridge = expect_context::<Bridge>();
    let backend = expect_context::<BackendPreference>().0;
    let busy = move || matches!(model.status.get(), Status::Loading | Status::Starting);
    let load = move |_| {
        if crate::bridge::runs::refuse_while_running() {
            return;
        }
        chat.streaming.set(None);
        model.status.set(Status::Loading);
        model.card.set(None);
        model.load_error.set(None);
        bridge.send(Request::Load { url: model.url.get_untracked(), backend: backend.get_untracked(), context: None });
    };
    let cancel = move |_| bridge.send(Request::Cancel);
    let dragging = RwSignal::new(false);
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        load_files(file_list(ev.data_transfer().and_then(|d| d.files())));
    };
    let on_dragover = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(true);
    };
    let folder_input = NodeRef::<leptos::html::Input>::new();
    // Leptos has no attribute for it: `webkitdirectory` makes the picker choose a folder (all its files).
    Effect::new(move |_| {
        if let Some(input) = folder_input.get() {
            let _ = input.set_attribute("webkitdirectory", "");
        }
    });

    view! {
        <section class="panel models" class:dragging=move || dragging.get() data-testid="models-panel"
            on:dragover=on_dragover on:dragleave=move |_| dragging.set(false) on:drop=on_drop>
            <h2>"Model"</h2>
            <label for="model-url">"GGUF URL"</label>
            <input id="model-url" type="text" data-testid="model-url-input" bind:value=model.url spellcheck="false"/>
            <div class="row">
                <button data-testid="model-load" on:click=load disabled=busy>"Load"</button>
                <Show when=busy>
                    <button class="secondary" on:click=cancel>"Cancel"</button>
                </Show>
            </div>
            <div class="local">
                <label class="file-button" title="a .gguf file">
                    "Open a .gguf file…"
                    <input type="file" accept=".gguf" data-testid="model-file-input" disabled=busy
                        on:change=move |ev| load_files(take_input_files(&ev))/>
                </label>
                <label class="file-button" title="a Hugging Face folder: config.json, tokenizer.json, *.safetensors">
                    "Open a model folder…"
                    <input type="file" node_ref=folder_input data-testid="model-folder-input" disabled=busy
                        on:change=move |ev| load_files(take_input_files(&ev))/>
                </label>
            </div>
            <p class="muted drop-hint">"…or drop a .gguf (or a folder's files) here."</p>
            <LoadProgress/>
            <LoadError/>
            <ModelCardView/>
        </section>
        <Catalog/>
        <StoragePanel/>
    }
}

#[component]
fn LoadProgress() -> impl IntoView {
    let model = expect_context::<ModelState>();
    move || {
        model.progress.get().map(|p| {
            let elapsed_s = (p.now_ms - p.started_ms) / 1000.0;
            // "done of total (n%) speed, time left", or just the bytes and speed when the size is unknown.
            let amount = if p.total == 0 {
                format!("{} {}", format::bytes(p.done), format::speed_and_eta(p.done, p.done, elapsed_s))
            } else {
                format!(
                    "{} of {} ({}%) {}",
                    format::bytes(p.done),
                    format::bytes(p.total),
                    format::percent(p.done, p.total),
                    format::speed_and_eta(p.done, p.total, elapsed_s)
                )
            };
            let label = match p.stage {
                Stage::Backend => "opening the device…".to_string(),
                Stage::Header => "reading the model's header…".to_string(),
                Stage::Download => format!("downloading into the browser's storage: {}", amount),
                Stage::Weights => format!("weights: {}", amount),
            };
            let value = if matches!(p.stage, Stage::Weights | Stage::Download) { p.done as f64 } else { 0.0 };
            view! {
                <div class="progress" data-testid="load-progress" data-stage=format!("{:?}", p.stage).to_lowercase()>
                    <progress max=p.total.max(1) as f64 value=value></progress>
                    <p class="muted">{label}</p>
                </div>
            }
        })
    }
}

#[component]
fn ModelCardView() -> impl IntoView {
    let model = expect_context::<ModelState>();
    let storage = expect_context::<Storage>();
    let adapters = expect_context::<LoraState>();
    move || {
        let card = model.card.get()?;
        adapters.adapters.track();
        let lora = crate::bridge::lora::label(&crate::bridge::lora::choices(adapters).1)
            .unwrap_or_else(|| "none".to_string());
        let origin = match storage.origin.get() {
            Some(Origin::Cache { store }) => format!("loaded from cache ({})", store.label()),
            Some(Origin::Network { store }) => format!("downloaded, now kept in {}", store.label()),
            Some(Origin::Streamed { reason }) => {
                format!("streamed from the server (HTTP Range requests): not kept, because {reason}")
            }
            Some(Origin::Local) => "your files".to_string(),
            None => "—".to_string(),
        };
        let backend = model.backend.get()?;
        let quant = card
            .quantization
            .iter()
            .map(|(t, b)| format!("{t} {}%", format::percent(*b, card.weight_bytes)))
            .collect::<Vec<_>>()
            .join(", ");
        let device = match &backend {
            BackendInfo::Gpu { adapter, f16 } => format!(
                "WebGPU{} ({} adapter), shader-f16 {}, max binding {}",
                if adapter.name.is_empty() { String::new() } else { format!(": {}", adapter.name) },
                adapter.device_type.to_lowercase(),
                if *f16 { "on" } else { "off" },
                format::bytes(adapter.max_storage_binding_bytes)
            ),
            cpu @ BackendInfo::Cpu { .. } => cpu.label(),
        };
        let load = model.load.get().unwrap_or_default();
        Some(view! {
            <dl class="card">
                <dt>"Name"</dt><dd>{card.name.clone()}</dd>
                <dt>"Architecture"</dt><dd>{format!("{}, {} layers, hidden {}, {} heads ({} KV)", card.arch, card.layers, card.hidden_size, card.heads, card.kv_heads)}</dd>
                <dt>"Parameters"</dt><dd>{format!("{:.1} M", card.parameters as f64 / 1e6)}</dd>
                <dt>"File"</dt><dd>{format::bytes(card.file_bytes)}</dd>
                <dt>"Source"</dt><dd data-testid="model-origin">{origin}</dd>
                <dt>"Quantization"</dt><dd>{quant}</dd>
                <dt>"Context"</dt><dd>{format!("{} (session {})", card.context_length, card.session_context)}</dd>
                <dt>"LoRA"</dt><dd data-testid="model-lora">{lora}</dd>
                <dt>"Chat template"</dt><dd>{if card.chat_template_builtin { "built-in" } else { "the model's own" }}</dd>
                <dt>"Device"</dt><dd data-testid="model-device">{device}</dd>
                <dt>"Loaded in"</dt><dd>{format::duration(load.load_ms / 1000.0)}</dd>
                <dt>"Worker memory"</dt>
                <dd data-testid="model-wasm-memory" data-bytes=load.wasm_memory_bytes.to_string()>
                    {format!("{} of wasm memory after the load", format::bytes(load.wasm_memory_bytes))}
                </dd>
            </dl>
        })
    }
}
