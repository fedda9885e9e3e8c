//! The page: provides the state and the worker bridge, then lays out the views: the side panels (model, device,
//! LoRA adapters, settings, sharing) and one main area — Chat, Magpie or Synthesis — picked in the nav. Every area
//! stays mounted while hidden, so a draft or a form survives switching, and runs go on whichever is shown (their
//! state is app-wide).
//!
//! A page opened from a share link (`#share=…`) loads nothing until the user has seen what the link holds and
//! accepted it; a link that cannot be read says why, and the page starts as if opened plainly.

use crate::bridge::Bridge;
use crate::components::conversations::ConversationsView;
use crate::components::{chat::ChatView, models::ModelsView, settings::SettingsView, status::ModelStatus};
use crate::components::adapter::AdapterPanel;
use crate::components::lora::LoraPanel;
use crate::components::{dataset_table::DatasetTable, magpie::MagpieView, synth::SynthView};
use crate::components::{share::SharePanel, share_preview::SharePreview};
use crate::components::{compare::CompareView, train::TrainView};
use crate::components::update_prompt::UpdatePrompt;
use crate::state::{provide_state, ActiveView, BackendPreference, View};
use engine::protocol::BackendChoice;
use leptos::prelude::*;

/// The model the app's own server provides (`aviary serve --model-dir`), relative to the page.
pub const DEFAULT_MODEL_URL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Query parameters: `?model=URL` picks the model to load, `?autoload=0` waits for the Load button, `?backend=cpu`
/// (or `gpu`, `auto`) picks the backend, `?simd=0` starts the portable wasm worker and `?simd=128` the SIMD128 one
/// (without relaxed SIMD) where a more capable one would run.
pub(crate) fn query_param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    let search = search.strip_prefix('?').unwrap_or(&search).to_string();
    search.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| js_sys::decode_uri_component(v).ok().map(String::from).unwrap_or_else(|| v.to_string()))
    })
}

#[component]
pub fn App() -> impl IntoView {
    provide_state(query_param("model").unwrap_or_else(|| DEFAULT_MODEL_URL.to_string()));
    let backend = expect_context::<BackendPreference>().0;
    match query_param("backend").as_deref() {
        Some("cpu") => backend.set(BackendChoice::Cpu),
        Some("gpu" | "webgpu") => backend.set(BackendChoice::Gpu),
        _ => {}
    }
    let bridge = Bridge::start();
    provide_context(bridge);
    crate::pwa::start();
    crate::components::settings::persist_settings();
    crate::components::conversations::persist_conversations();
    crate::dataset_persist::persist_dataset();
    let link_waits = crate::share_link::watch_location();
    if query_param("autoload").as_deref() != Some("0") && !link_waits {
        crate::share_link::load_plainly();
    }

    let view = expect_context::<ActiveView>().0;
    view.set(match query_param("view").as_deref() {
        Some("magpie") => View::Magpie,
        Some("synth") => View::Synth,
        Some("train") => View::Train,
        Some("compare") => View::Compare,
        _ => View::Chat,
    });
    let tab = move |v: View, label: &'static str, testid: &'static str| {
        view! {
            <button class="tab" class:active=move || view.get() == v data-testid=testid
                aria-pressed=move || (view.get() == v).to_string() on:click=move |_| view.set(v)>{label}</button>
        }
    };
    let shown = move |v: View| move || view.get() != v;

    view! {
        <header class="top">
            <h1>"Aviary"</h1>
            <nav class="tabs" aria-label="Views">
                {tab(View::Chat, "Chat", "nav-chat")}
                {tab(View::Magpie, "Magpie", "nav-magpie")}
                {tab(View::Synth, "Synthesis", "nav-synth")}
                {tab(View::Train, "Train", "nav-train")}
                {tab(View::Compare, "Compare", "nav-compare")}
            </nav>
            <ModelStatus/>
            <UpdatePrompt/>
        </header>
        <SharePreview/>
        <main class="layout">
            <aside class="side">
                <div hidden=shown(View::Chat)><ConversationsView/></div>
                <ModelsView/>
                <AdapterPanel/>
                <div hidden=move || !matches!(view.get(), View::Chat | View::Train | View::Compare)><LoraPanel/></div>
                <div hidden=shown(View::Chat)><SettingsView/></div>
                <SharePanel/>
            </aside>
            <div class="view" hidden=shown(View::Chat)><ChatView/></div>
            <div class="view data" hidden=shown(View::Magpie)>
                <MagpieView/>
                <DatasetTable/>
            </div>
            <div class="view" hidden=shown(View::Synth)><SynthView/></div>
            <div class="view" hidden=shown(View::Train)><TrainView/></div>
            <div class="view" hidden=shown(View::Compare)><CompareView/></div>
        </main>
    }
}

