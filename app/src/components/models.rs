//! Loading a model: its URL, the Load button, progress (bytes, speed, time left), and the card of what is loaded.

use crate::bridge::Bridge;
use crate::format;
use crate::state::{BackendPreference, Chat, ModelState, Status};
use engine::protocol::{BackendInfo, Request, Stage};
use leptos::prelude::*;

#[component]
pub fn ModelsView() -> impl IntoView {
    let model = expect_context::<ModelState>();
    let chat = expect_context::<Chat>();
    let bridge = expect_context::<Bridge>();
    let backend = expect_context::<BackendPreference>().0;
    let busy = move || matches!(model.status.get(), Status::Loading | Status::Starting);
    let load = move |_| {
        chat.streaming.set(None);
        model.status.set(Status::Loading);
        model.card.set(None);
        bridge.send(Request::Load { url: model.url.get_untracked(), backend: backend.get_untracked(), context: None });
    };
    let cancel = move |_| bridge.send(Request::Cancel);

    view! {
        <section class="panel models">
            <h2>"Model"</h2>
            <label for="model-url">"GGUF URL"</label>
            <input id="model-url" type="text" data-testid="model-url-input" bind:value=model.url spellcheck="false"/>
            <div class="row">
                <button data-testid="model-load" on:click=load disabled=busy>"Load"</button>
                <Show when=busy>
                    <button class="secondary" on:click=cancel>"Cancel"</button>
                </Show>
            </div>
            <LoadProgress/>
            <ModelCardView/>
        </section>
    }
}

#[component]
fn LoadProgress() -> impl IntoView {
    let model = expect_context::<ModelState>();
    move || {
        model.progress.get().map(|p| {
            let label = match p.stage {
                Stage::Backend => "opening the device…".to_string(),
                Stage::Header => "reading the model's header…".to_string(),
                Stage::Weights => format!(
                    "weights: {} of {} ({}%) {}",
                    format::bytes(p.done),
                    format::bytes(p.total),
                    format::percent(p.done, p.total),
                    format::speed_and_eta(p.done, p.total, (p.now_ms - p.started_ms) / 1000.0)
                ),
            };
            let value = if p.stage == Stage::Weights { p.done as f64 } else { 0.0 };
            view! {
                <div class="progress">
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
    move || {
        let card = model.card.get()?;
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
                <dt>"Quantization"</dt><dd>{quant}</dd>
                <dt>"Context"</dt><dd>{format!("{} (session {})", card.context_length, card.session_context)}</dd>
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
