//! A share link (or `.aviary.json`) opened in this page: what it will do — the model and adapters with their sizes
//! and whether this browser already stores them, the conversation's length, the settings — before anything happens;
//! Accept restores it, Dismiss opens the app as usual. After a restore, "Replay" regenerates the link's last reply,
//! which with the same model, adapters, settings, seed and backend gives the same tokens.
//!
//! Every text here comes from whoever made the link: it is shown as text nodes only.

use crate::bridge::{regenerate, Bridge};
use crate::format;
use crate::share_link::{clear_fragment, load_plainly, model_url, restore};
use crate::state::{Chat, LoraState, LoraStatus, ModelState, Role, ShareInbox, Status, Storage};
use aviary_app::js::absolute_url;
use leptos::prelude::*;
use share::ShareState;

/// "97.6 MB, stored in this browser" / "2.1 MB, to download from example.org" / "to download" (size unknown).
fn availability(storage: Storage, url: &str, size: Option<u64>) -> (String, bool) {
    let absolute = absolute_url(url);
    let stored = storage.cached(&absolute).is_some();
    let size = size.map(format::bytes);
    let host = web_sys::Url::new(&absolute).ok().map(|u| u.host()).unwrap_or_default();
    let where_ = if stored { "stored in this browser".to_string() } else { format!("to download from {host}") };
    (size.map_or(where_.clone(), |s| format!("{s}, {where_}")), stored)
}

/// The sampler in one line, as the settings panel names its knobs.
fn settings_line(s: &ShareState) -> String {
    let p = &s.sampling;
    let sampler = if p.temperature == 0.0 {
        "greedy".to_string()
    } else {
        format!("temperature {}, top-k {}, top-p {}, min-p {}", p.temperature, p.top_k, p.top_p, p.min_p)
    };
    let backend = match s.backend {
        Some(engine::protocol::BackendChoice::Cpu) => ", on the CPU",
        Some(engine::protocol::BackendChoice::Gpu) => ", on WebGPU",
        _ => "",
    };
    format!(
        "{sampler}, repeat penalty {} over {}, seed {}, up to {} tokens{backend}",
        p.repeat_penalty, p.repeat_last_n, p.seed, s.max_tokens
    )
}

#[component]
pub fn SharePreview() -> impl IntoView {
    let inbox = expect_context::<ShareInbox>();
    let storage = expect_context::<Storage>();
    let model = expect_context::<ModelState>();

    let accept = move |_| {
        if let Some(state) = inbox.incoming.get_untracked() {
            inbox.incoming.set(None);
            restore(state);
        }
    };
    let dismiss = move |_| {
        inbox.incoming.set(None);
        clear_fragment();
        // Opened as if plainly: the page's own model, unless one is already there.
        if model.card.with_untracked(|c| c.is_none()) && !matches!(model.status.get_untracked(), Status::Loading) {
            load_plainly();
        }
    };

    let preview = move || {
        let s = inbox.incoming.get()?;
        let model_line = match &s.model {
            Some(m) => {
                let url = model_url(m);
                let name = m.name.clone().unwrap_or_else(|| aviary_app::js::file_name(&url));
                let (where_, stored) = availability(storage, &url, m.size_bytes);
                view! {
                    <li data-testid="share-model" data-stored=stored.to_string()>
                        "Model: " <strong>{name}</strong> " (" {where_} ")"
                        <span class="muted mono">{url}</span>
                    </li>
                }
                .into_any()
            }
            None => view! { <li data-testid="share-model">"No model: the link keeps whichever you load."</li> }.into_any(),
        };
        let adapters = s
            .adapters
            .iter()
            .map(|a| {
                let (where_, stored) = availability(storage, &a.url, a.size_bytes);
                let state = if a.enabled { format!("on, ×{:.2}", a.scale) } else { "off".to_string() };
                let name = if a.name.is_empty() { aviary_app::js::file_name(&a.url) } else { a.name.clone() };
                view! {
                    <li data-testid="share-adapter" data-stored=stored.to_string()>
                        "Adapter: " <strong>{name}</strong> {format!(" ({state}; {where_})")}
                        <span class="muted mono">{a.url.clone()}</span>
                    </li>
                }
            })
            .collect_view();
        let turns = s.messages.len();
        let conversation = match turns {
            0 => "No conversation.".to_string(),
            1 => "A conversation of 1 message.".to_string(),
            n => format!("A conversation of {n} messages."),
        };
        let first = s.messages.iter().find(|m| m.role == share::Role::User).map(|m| m.text.clone());
        let system = (!s.system_prompt.is_empty()).then(|| s.system_prompt.clone());
        let view_name = match s.view {
            share::View::Chat => "Chat",
            share::View::Magpie => "Magpie",
            share::View::Synthesis => "Synthesis",
        };
        Some(view! {
            <section class="panel share-preview" data-testid="share-preview" role="dialog" aria-label="Shared demo">
                <h2>"Open this shared demo?"</h2>
                <p class="muted">"The link was made in Aviary. Nothing loads until you accept; then the model and \
                    adapters come from this browser's storage or from their addresses."</p>
                <ul class="share-items">
                    {model_line}
                    {adapters}
                    <li data-testid="share-conversation">{conversation}
                        {first.map(|t| view! { <blockquote class="clamp" data-testid="share-first">{t}</blockquote> })}
                    </li>
                    {system.map(|t| view! { <li>"System prompt: " <span class="clamp" data-testid="share-system">{t}</span></li> })}
                    <li data-testid="share-settings">{format!("Settings: {}. Opens the {view_name} view.", settings_line(&s))}</li>
                </ul>
                <div class="row">
                    <button data-testid="share-accept" on:click=accept>"Open it"</button>
                    <button class="secondary" data-testid="share-dismiss" on:click=dismiss>"Not now"</button>
                </div>
            </section>
        })
    };

    view! {
        {preview}
        {move || inbox.error.get().map(|e| view! {
            <div class="panel error share-error" role="alert">
                <p data-testid="share-error">{e}</p>
                <button class="link" on:click=move |_| inbox.error.set(None)>"Dismiss"</button>
            </div>
        })}
        <Restored/>
    }
}

/// After a restore: what the link could not bring, and Replay while its last reply is still the last one.
#[component]
fn Restored() -> impl IntoView {
    let inbox = expect_context::<ShareInbox>();
    let chat = expect_context::<Chat>();
    let model = expect_context::<ModelState>();
    let lora = expect_context::<LoraState>();
    let bridge = expect_context::<Bridge>();
    let same_conversation = move || {
        let Some(count) = inbox.restored.get() else { return false };
        chat.messages.with(|m| m.len() == count && m.last().is_some_and(|m| m.role == Role::Assistant))
    };
    let ready = move || {
        model.status.get() == Status::Ready
            && lora.pending.get() == 0
            && lora.adapters.with(|l| l.iter().all(|a| a.status == LoraStatus::Ready))
    };
    let waiting_for = move || {
        if model.status.get() != Status::Ready {
            "waiting for the model…"
        } else if !ready() {
            "waiting for the adapters…"
        } else {
            ""
        }
    };
    view! {
        <Show when=move || inbox.restored.get().is_some()>
            <div class="panel notice share-restored" data-testid="share-restored">
                <p>"Shared demo restored."
                    {move || inbox.notes.get().into_iter().map(|n| view! { " " {n} }).collect_view()}
                </p>
                <Show when=same_conversation>
                    <button data-testid="share-replay" disabled=move || !ready() on:click=move |_| regenerate(bridge)
                        title="Generate the last reply again with the link's model, adapters, settings and seed">
                        "Replay the last reply"
                    </button>
                    <span class="muted">{waiting_for}</span>
                </Show>
                <button class="link" on:click=move |_| inbox.restored.set(None)>"Close"</button>
            </div>
        </Show>
    }
}
