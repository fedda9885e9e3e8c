//! One message: its text (plain, so model output is never parsed as HTML) and, for replies, how it ended and its
//! speed.

use crate::format;
use crate::state::{ChatMessage, Reply, Role};
use engine::session::StopReason;
use leptos::prelude::*;

#[component]
pub fn MessageView(message: ChatMessage) -> impl IntoView {
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
    view! {
        <article class=class data-testid=testid data-state=state>
            <div class="text">{move || message.text.get()}</div>
            {footer}
        </article>
    }
}
