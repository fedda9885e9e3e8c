//! The Adapters panel: LoRA adapters for the loaded model, by URL (a `.gguf` adapter, or a PEFT folder) or from
//! files, each with a switch, a scale and Remove. The next reply applies the adapters switched on at their scales;
//! nothing is reloaded when they change (the worker keeps every loaded adapter fitted and ready).

use crate::bridge::{lora, Bridge};
use crate::files::take_input_files;
use crate::format;
use crate::state::{LoadedLora, LoraState, LoraStatus};
use engine::lora::LoraKind;
use leptos::prelude::*;

/// "GGUF, rank 8, q k v o down, 30 layers".
fn describe(a: &LoadedLora) -> String {
    if a.info.layers == 0 {
        // Not read yet (a shared demo's adapter, waiting for its model): all that is known is its size.
        return if a.bytes > 0 { format::bytes(a.bytes) } else { String::new() };
    }
    let kind = match a.info.kind {
        LoraKind::Gguf => "GGUF",
        LoraKind::Peft => "PEFT",
    };
    let (lo, hi) = a.info.rank;
    let rank = if lo == hi { format!("rank {hi}") } else { format!("rank {lo}–{hi}") };
    let targets = a
        .info
        .targets
        .iter()
        .map(|t| t.hf_name().trim_end_matches("_proj"))
        .collect::<Vec<_>>()
        .join(" ");
    format!("{kind}, {rank}, {targets}, {} layers, {}", a.info.layers, format::bytes(a.bytes))
}

#[component]
pub fn LoraPanel() -> impl IntoView {
    let state = expect_context::<LoraState>();
    let bridge = expect_context::<Bridge>();
    let url = RwSignal::new(String::new());
    let load = move || {
        let u = url.get_untracked();
        if !u.trim().is_empty() {
            lora::load_url(bridge, state, u.trim().to_string());
        }
    };
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" {
            load();
        }
    };
    let folder_input = NodeRef::<leptos::html::Input>::new();
    // Leptos has no attribute for it: `webkitdirectory` makes the picker choose a folder (all its files).
    Effect::new(move |_| {
        if let Some(input) = folder_input.get() {
            let _ = input.set_attribute("webkitdirectory", "");
        }
    });
    let busy = move || state.pending.get() > 0;
    let error = move || state.error.get().map(|e| view! { <p class="error" data-testid="lora-error" role="alert">{e}</p> });

    view! {
        <section class="panel lora" data-testid="lora-panel" aria-busy=move || busy().to_string()>
            <h2>"Adapters"</h2>
            <p class="muted">"LoRA adapters for the loaded model; the next reply applies those switched on."</p>
            <label for="lora-url">"Adapter URL (a .gguf, or a PEFT folder)"</label>
            <input id="lora-url" type="text" data-testid="lora-url-input" bind:value=url spellcheck="false"
                on:keydown=on_key/>
            <div class="row">
                <button data-testid="lora-load" on:click=move |_| load()
                    disabled=move || url.with(|u| u.trim().is_empty())>"Load"</button>
            </div>
            <div class="local">
                <label class="file-button" title="a .gguf adapter, or a PEFT folder's adapter_config.json and adapter_model.safetensors">
                    "Open adapter files…"
                    <input type="file" multiple accept=".gguf,.json,.safetensors" data-testid="lora-file-input"
                        on:change=move |ev| lora::load_files(bridge, state, take_input_files(&ev))/>
                </label>
                <label class="file-button" title="a PEFT folder: adapter_config.json, adapter_model.safetensors">
                    "Open a PEFT folder…"
                    <input type="file" node_ref=folder_input data-testid="lora-folder-input"
                        on:change=move |ev| lora::load_files(bridge, state, take_input_files(&ev))/>
                </label>
            </div>
            <Show when=busy>
                <p class="muted" data-testid="lora-busy">"loading an adapter…"</p>
            </Show>
            {error}
            <ul class="entries lora-list">
                <For each=move || state.adapters.get() key=|a| a.id let:adapter>
                    <LoraRow id=adapter.id/>
                </For>
            </ul>
        </section>
    }
}

#[component]
fn LoraRow(id: u64) -> impl IntoView {
    let state = expect_context::<LoraState>();
    let bridge = expect_context::<Bridge>();
    let get = move || state.adapters.with(|list| list.iter().find(|a| a.id == id).cloned());
    let set = move |f: &dyn Fn(&mut LoadedLora)| {
        state.adapters.update(|list| {
            if let Some(a) = list.iter_mut().find(|a| a.id == id) {
                f(a)
            }
        })
    };
    let name = move || get().map(|a| a.name).unwrap_or_default();
    let detail = move || get().map(|a| describe(&a)).unwrap_or_default();
    let enabled = move || get().is_some_and(|a| a.enabled);
    let scale = move || get().map_or(1.0, |a| a.scale);
    let status = move || get().map_or(LoraStatus::Ready, |a| a.status);
    let note = move || match status() {
        LoraStatus::Ready => None,
        LoraStatus::Reloading => Some("loading it again for the new model…"),
        LoraStatus::Stale => Some("made for the previous model: open its files again"),
    };
    let usable = move || status() == LoraStatus::Ready;
    view! {
        <li class="entry lora-item" data-testid="lora-item" data-id=id.to_string() data-name=name
            data-status=move || format!("{:?}", status()).to_lowercase()>
            <div class="entry-text">
                <span class="entry-name">{name}</span>
                <span class="muted" data-testid="lora-detail">{detail}</span>
                {move || note().map(|n| view! { <span class="muted" data-testid="lora-note">{n}</span> })}
                <div class="lora-controls">
                    <label class="lora-switch">
                        <input type="checkbox" data-testid="lora-toggle" prop:checked=enabled disabled=move || !usable()
                            on:change=move |ev| {
                                let on = event_target_checked(&ev);
                                set(&move |a| a.enabled = on);
                            }/>
                        "on"
                    </label>
                    <input type="range" min="0" max="2" step="0.05" data-testid="lora-scale" aria-label="scale"
                        prop:value=move || scale().to_string() disabled=move || !usable()
                        on:input=move |ev| {
                            // Only values the slider can give; anything else keeps the last good scale.
                            if let Ok(v) = event_target_value(&ev).parse::<f32>() {
                                if v.is_finite() && (0.0..=2.0).contains(&v) {
                                    set(&move |a| a.scale = v);
                                }
                            }
                        }/>
                    <output data-testid="lora-scale-value">{move || format!("×{:.2}", scale())}</output>
                </div>
            </div>
            <div class="entry-actions">
                <button class="secondary danger" data-testid="lora-remove"
                    disabled=move || status() == LoraStatus::Reloading
                    on:click=move |_| lora::remove(bridge, state, id)>"Remove"</button>
            </div>
        </li>
    }
}
