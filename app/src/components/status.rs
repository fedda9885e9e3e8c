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
