//! One message. A user's is plain text; a reply is rendered from Markdown (sanitised: the model's output never
//! becomes live HTML), or as token chips whose candidates open on click, with how it ended and its speed. The last
//! reply can be regenerated and the last question edited. A reply made with LoRA adapters names them and their
//! scales.

use crate::bridge::{edit_last, regenerate, Bridge};
use crate::components::token_popup::{visible, TokenPopup};
use crate::format;
use crate::markdown;
use crate::state::{Chat, ChatMessage, Reply, Role};
use engine::session::StopReason;
use leptos::prelude::*;

#[component]
pub fn MessageView(message: ChatMessage) -> impl IntoView {
    let chat = expect_context::<Chat>();
    let bridge = expect_context::<Bridge>();
    let (class, testid) = match message.role {
        Role::User => ("message user", "message-user"),
        Role::Assistant => ("message assistant", "message-assistant"),
    };
    let state = move || match message.reply.get() {
        Reply::Streaming => "streaming",
        Reply::Done(StopReason::Cancelled) => "stopped",
        Reply::Done(_) => "done",
        Reply::Failed(_) => "failed",
    };
    let idle = move || chat.streaming.get().is_none();
    let is_last = move || chat.messages.with(|m| m.last().map(|l| l.id) == Some(message.id));
    let is_last_user =
        move || chat.messages.with(|m| m.iter().rev().find(|m| m.role == Role::User).map(|m| m.id) == Some(message.id));
    let show_tokens = RwSignal::new(false);
    let selected = RwSignal::new(None::<usize>);
    let editing = RwSignal::new(None::<String>);

    let footer = move || {
        if message.role == Role::User {
            return None;
        }
        let mut parts = Vec::new();
        match message.reply.get() {
            Reply::Streaming => parts.push("…".to_string()),
            Reply::Done(StopReason::Cancelled) => parts.push("stopped".to_string()),
            Reply::Done(StopReason::MaxTokens) => parts.push("max tokens reached".to_string()),
            Reply::Done(StopReason::ContextFull) => parts.push("context full".to_string()),
            Reply::Done(_) => {}
            Reply::Failed(e) => parts.push(format!("error: {e}")),
        }
        if let Some(adapters) = crate::bridge::lora::label(&message.lora.get()) {
            parts.push(format!("LoRA: {adapters}"));
        }
        if let Some(s) = message.stats.get() {
            if s.generated_tokens > 0 {
                parts.push(format!("{} tokens", s.generated_tokens));
                parts.push(format!("first token {}", format::duration(s.time_to_first_token_ms / 1000.0)));
                parts.push(format!("prefill {:.1} tok/s", s.prefill_tok_s()));
                parts.push(format!("decode {:.1} tok/s", s.decode_tok_s()));
            }
        }
        // The raw numbers for tools that measure the page (the text above is rounded for people).
        let raw = message.stats.get().and_then(|s| serde_json::to_string(&s).ok());
        Some(view! { <p class="meta" data-stats=raw>{parts.join(" · ")}</p> })
    };

    let body = move || {
        if message.role == Role::User {
            // Plain text (white-space: pre-wrap keeps the user's line breaks).
            return view! { <div class="text">{move || message.text.get()}</div> }.into_any();
        }
        if show_tokens.get() {
            let chips = move || {
                message
                    .tokens
                    .get()
                    .into_iter()
                    .enumerate()
                    .map(|(i, chip)| {
                        view! {
                            <button class="token" class:selected=move || selected.get() == Some(i) data-testid="token"
                                data-token=chip.token.to_string() on:click=move |_| {
                                    selected.update(|s| *s = if *s == Some(i) { None } else { Some(i) })
                                }>
                                {visible(&chip.text)}
                            </button>
                        }
                    })
                    .collect_view()
            };
            let popup = move || {
                let i = selected.get()?;
                let chip = message.tokens.with(|t| t.get(i).cloned())?;
                Some(view! { <TokenPopup chip=chip on_close=Callback::new(move |_| selected.set(None))/> })
            };
            return view! {
                // The raw text stays on `.text` for anything that reads the reply (tests, copy).
                <div class="text tokens" data-raw=move || message.text.get()>{chips}</div>
                {popup}
            }
            .into_any();
        }
        view! {
            <div class="text markdown" data-raw=move || message.text.get()
                inner_html=move || markdown::to_html(&message.text.get())></div>
        }
        .into_any()
    };

    let editor = move || {
        let draft = editing.get()?;
        let send = move |_| {
            if let Some(text) = editing.get_untracked() {
                if !text.trim().is_empty() {
                    editing.set(None);
                    edit_last(bridge, text);
                }
            }
        };
        Some(view! {
            <div class="editor">
                <textarea data-testid="edit-input" rows="3" prop:value=draft
                    on:input=move |ev| editing.set(Some(event_target_value(&ev)))></textarea>
                <div class="row">
                    <button data-testid="edit-send" on:click=send disabled=move || !idle()>"Send edited"</button>
                    <button class="secondary" data-testid="edit-cancel" on:click=move |_| editing.set(None)>"Cancel"</button>
                </div>
            </div>
        })
    };

    // Actions sit beside the article, not in it, so the message's own text content is only its text.
    let actions = move || {
        let mut any = false;
        let tokens = (message.role == Role::Assistant).then(|| {
            any = true;
            view! {
                <button class="link" data-testid="show-tokens" aria-pressed=move || show_tokens.get().to_string()
                    on:click=move |_| { show_tokens.update(|s| *s = !*s); selected.set(None); }>
                    {move || if show_tokens.get() { "Show text" } else { "Show tokens" }}
                </button>
            }
        });
        let regen = (message.role == Role::Assistant && is_last() && idle()).then(|| {
            any = true;
            view! { <button class="link" data-testid="regenerate" on:click=move |_| regenerate(bridge)>"Regenerate"</button> }
        });
        let edit = (message.role == Role::User && is_last_user() && idle() && editing.with(|e| e.is_none())).then(|| {
            any = true;
            view! {
                <button class="link" data-testid="edit-last" on:click=move |_| editing.set(Some(message.text.get_untracked()))>
                    "Edit"
                </button>
            }
        });
        any.then(|| view! { <div class="message-actions">{tokens}{regen}{edit}</div> })
    };

    view! {
        <div class="message-row" class:user=message.role == Role::User>
            <article class=class data-testid=testid data-state=state>
                {body}
                {footer}
            </article>
            {editor}
            {actions}
        </div>
    }
}
