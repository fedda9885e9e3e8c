//! "Update available — reload": shown when a new version of the app waits (see `pwa`). The new version never takes
//! over by itself, so a reply being written or a Magpie run going is never cut off by a deploy; the user picks the
//! moment.

use crate::pwa::{apply_update, PwaState};
use crate::state::{ModelState, Status};
use leptos::prelude::*;

#[component]
pub fn UpdatePrompt() -> impl IntoView {
    let pwa = expect_context::<PwaState>();
    let model = expect_context::<ModelState>();
    // Reloading ends a reply mid-stream: the button says so rather than refusing, since the user may want it anyway.
    let title = move || {
        if matches!(model.status.get(), Status::Generating) {
            "Reloads the page with the new version; the reply being written stops"
        } else {
            "Reloads the page with the new version"
        }
    };
    view! {
        <Show when=move || pwa.update_ready.get()>
            <div class="update-available" data-testid="update-available" role="status">
                <span>"Update available — "</span>
                <button class="secondary" data-testid="update-reload" title=title on:click=move |_| apply_update()>
                    "reload"
                </button>
            </div>
        </Show>
    }
}
