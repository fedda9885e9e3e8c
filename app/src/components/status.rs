//! The one-line model status in the header. Its text contains "ready" exactly when a model can generate. Beside it,
//! why the worker refused a request that has no view of its own (a load while a Magpie run goes).

use crate::state::{ModelState, Status};
use leptos::prelude::*;

#[component]
pub fn ModelStatus() -> impl IntoView {
    let model = expect_context::<ModelState>();
    let text = move || {
        let name = model.card.with(|c| c.as_ref().map(|c| c.name.clone()).unwrap_or_default());
        let on = model.backend.with(|b| b.as_ref().map(|b| b.label()).unwrap_or_default());
        match model.status.get() {
            Status::Starting => "starting the engine…".to_string(),
            Status::Empty => "no model loaded".to_string(),
            Status::Loading => "loading…".to_string(),
            Status::Ready => format!("ready: {name} on {on}"),
            Status::Generating => format!("generating: {name} on {on}"),
            Status::Failed(e) => format!("error: {e}"),
        }
    };
    let class = move || match model.status.get() {
        Status::Ready => "status ready",
        Status::Failed(_) => "status failed",
        _ => "status busy",
    };
    let notice = move || model.notice.get().map(|n| view! { <p class="error" data-testid="model-notice">{n}</p> });
    view! {
        <p class=class data-testid="model-status" role="status">{text}</p>
        {notice}
    }
}

/// Why the last load failed, in the user's words, with the technical text behind "Details". A load that fails
/// before it replaces the model (not a model, not found, incomplete) leaves that model loaded, which it says.
#[component]
pub fn LoadError() -> impl IntoView {
    let model = expect_context::<ModelState>();
    move || {
        let (message, detail) = model.load_error.get()?;
        let kept = model.card.with(|c| c.as_ref().map(|c| format!("{} is still loaded.", c.name)));
        Some(view! {
            <div class="load-error" role="alert">
                <p class="error" data-testid="load-error">{message}</p>
                {detail.map(|d| view! {
                    <details class="load-error-detail" data-testid="load-error-detail">
                        <summary>"Details"</summary>
                        <pre>{d}</pre>
                    </details>
                })}
                {kept.map(|k| view! { <p class="muted" data-testid="load-error-kept">{k}</p> })}
            </div>
        })
    }
}
