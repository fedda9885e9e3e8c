//! The models kept in the browser's storage: each with its size and when it was saved, a Load and a Delete button,
//! and how much of the origin's quota is in use. LoRA adapters' files are kept beside them, marked as adapters;
//! their Load loads the adapter for the loaded model.

use crate::bridge::Bridge;
use crate::components::models::load_url;
use crate::format;
use crate::state::{LoraState, ModelState, Status, Storage};
use engine::protocol::{CacheEntry, Request};
use leptos::prelude::*;

/// Asks the browser how much storage this origin uses and may use (`navigator.storage.estimate()`).
pub fn refresh_estimate(storage: Storage) {
    wasm_bindgen_futures::spawn_local(async move {
        let Ok(navigator) = aviary_app::js::get(&js_sys::global(), "navigator") else { return };
        let Ok(manager) = aviary_app::js::get(&navigator, "storage") else { return };
        if manager.is_undefined() {
            return;
        }
        let Ok(estimate) = aviary_app::js::call_async(&manager, "estimate", &[]).await else { return };
        let number = |k: &str| aviary_app::js::get(&estimate, k).ok().and_then(|v| v.as_f64()).unwrap_or(0.0) as u64;
        storage.estimate.set(Some((number("usage"), number("quota"))));
    });
}

/// A time as the reader's locale writes it.
fn when(ms: f64) -> String {
    if ms <= 0.0 {
        return "—".into();
    }
    let date = js_sys::Date::new(&ms.into());
    String::from(date.to_locale_string("default", &wasm_bindgen::JsValue::UNDEFINED))
}

#[component]
pub fn StoragePanel() -> impl IntoView {
    let storage = expect_context::<Storage>();
    let quota = move || {
        storage.estimate.get().map(|(usage, quota)| {
            format!("{} used of {} this site may store", format::bytes(usage), format::bytes(quota))
        })
    };
    let store = move || match (storage.store.get(), storage.note.get()) {
        (Some(s), _) => format!("Downloaded models are kept in {}.", s.label()),
        (None, Some(note)) => note,
        (None, None) => String::new(),
    };
    view! {
        <section class="panel storage" data-testid="storage-panel">
            <h2>"Stored models"</h2>
            <p class="muted" data-testid="storage-store">{store}</p>
            <p class="muted" data-testid="storage-quota">{quota}</p>
            <Show when=move || storage.listed.get() && storage.entries.with(|e| e.is_empty())>
                <p class="muted" data-testid="storage-empty">"Nothing stored yet: a model loaded by URL is kept here."</p>
            </Show>
            <ul class="entries">
                <For each=move || storage.entries.get() key=|e| (e.url.clone(), e.saved_at_ms.to_bits(), e.complete) let:entry>
                    <StoredModel entry=entry/>
                </For>
            </ul>
        </section>
    }
}

#[component]
fn StoredModel(entry: CacheEntry) -> impl IntoView {
    let bridge = expect_context::<Bridge>();
    let model = expect_context::<ModelState>();
    let busy = move || matches!(model.status.get(), Status::Loading | Status::Starting);
    let url = entry.url.clone();
    let adapter = entry.adapter;
    let load = {
        // A PEFT adapter is stored as its folder's two files: Load asks for the folder.
        let target = match (adapter, entry.name.to_lowercase().ends_with(".gguf")) {
            (true, false) => url.rsplit_once('/').map_or(url.clone(), |(folder, _)| folder.to_string()),
            _ => url.clone(),
        };
        let lora = expect_context::<LoraState>();
        move |_| {
            if adapter {
                crate::bridge::lora::load_url(bridge, lora, target.clone())
            } else {
                load_url(target.clone())
            }
        }
    };
    let delete = {
        let url = url.clone();
        move |_| bridge.send(Request::DeleteCached { url: url.clone() })
    };
    let complete = entry.complete;
    let detail = format!(
        "{}{}, saved {}{}",
        if adapter { "LoRA adapter, " } else { "" },
        format::bytes(entry.bytes),
        when(entry.saved_at_ms),
        if complete { "" } else { " (partial download: not used)" }
    );
    view! {
        <li class="entry" data-testid="storage-entry" data-url=url.clone() data-bytes=entry.bytes.to_string()
            data-complete=complete.to_string() data-adapter=adapter.to_string()>
            <div class="entry-text">
                <span class="entry-name" title=url.clone()>{entry.name.clone()}</span>
                <span class="muted" data-testid="storage-entry-detail">{detail}</span>
            </div>
            <div class="entry-actions">
                <button class="secondary" data-testid="storage-load" on:click=load disabled=move || !complete || busy()>"Load"</button>
                <button class="secondary danger" data-testid="storage-delete" on:click=delete disabled=busy>"Delete"</button>
            </div>
        </li>
    }
}
