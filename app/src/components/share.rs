//! Sharing: "Copy link" makes a link to the demo as it is (the link holds the state itself, in its fragment, which
//! never reaches a server); a demo too long for a link is offered as a `.aviary.json` file, which "Open" reads back.

use crate::files::{download, read_text, take_input_files, today};
use crate::share_link::{capture, make, open_file, Made};
use crate::state::ShareInbox;
use leptos::prelude::*;
use wasm_bindgen::prelude::*;

/// What the last "Copy link" gave.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Link { link: String, copied: bool },
    File { why: String, json: String },
    Failed(String),
}

/// Copies `text` to the clipboard; false where the page may not (no permission, or no clipboard).
async fn copy_to_clipboard(text: &str) -> bool {
    let clipboard = web_sys::window()
        .and_then(|w| js_sys::Reflect::get(&w.navigator(), &"clipboard".into()).ok())
        .filter(|c| !c.is_undefined() && !c.is_null());
    let Some(clipboard) = clipboard else { return false };
    let write = js_sys::Reflect::get(&clipboard, &"writeText".into()).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok());
    let Some(write) = write else { return false };
    match write.call1(&clipboard, &text.into()).map(|p| p.dyn_into::<js_sys::Promise>()) {
        Ok(Ok(p)) => wasm_bindgen_futures::JsFuture::from(p).await.is_ok(),
        _ => false,
    }
}

#[component]
pub fn SharePanel() -> impl IntoView {
    let outcome = RwSignal::new(None::<Outcome>);
    let left_out = RwSignal::new(Vec::<String>::new());
    let copy = move |_| {
        let captured = capture();
        left_out.set(captured.left_out);
        match make(&captured.state) {
            Ok(Made::Link(link)) => {
                outcome.set(Some(Outcome::Link { link: link.clone(), copied: false }));
                leptos::task::spawn_local(async move {
                    let copied = copy_to_clipboard(&link).await;
                    outcome.update(|o| {
                        if let Some(Outcome::Link { link: l, copied: c }) = o {
                            if *l == link {
                                *c = copied;
                            }
                        }
                    });
                });
            }
            Ok(Made::File { why, json }) => outcome.set(Some(Outcome::File { why, json })),
            Err(e) => outcome.set(Some(Outcome::Failed(format!("No link could be made: {e}")))),
        }
    };
    let save_file = move |_| {
        if let Some(Outcome::File { json, .. }) = outcome.get_untracked() {
            if let Err(e) = download(&format!("aviary-demo-{}.aviary.json", today()), &json, "application/json") {
                outcome.set(Some(Outcome::Failed(e)));
            }
        }
    };
    let inbox = expect_context::<ShareInbox>();
    let open = move |ev: leptos::ev::Event| {
        let Some(file) = take_input_files(&ev).into_iter().next() else { return };
        leptos::task::spawn_local(async move {
            if file.size() > share::MAX_FILE_BYTES as f64 {
                inbox.error.set(Some(format!(
                    "{} cannot be opened: it is larger than the {} a shared demo may be",
                    file.name(),
                    crate::format::bytes(share::MAX_FILE_BYTES as u64)
                )));
                return;
            }
            match read_text(&file).await {
                Ok(text) => open_file(inbox, &file.name(), text.as_bytes()),
                Err(e) => inbox.error.set(Some(e)),
            }
        });
    };
    let select_all = |ev: leptos::ev::FocusEvent| {
        if let Some(input) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok()) {
            input.select();
        }
    };

    view! {
        <section class="panel share" aria-label="Share">
            <h2>"Share"</h2>
            <p class="muted">"A link to this demo: model, adapters, settings and the conversation. It loads nothing until \
                whoever opens it says so."</p>
            <div class="row">
                <button data-testid="share-copy" on:click=copy>"Copy link"</button>
                <label class="file-button">
                    "Open .aviary.json"
                    <input type="file" accept=".json,application/json" data-testid="share-open-file"
                        on:change=open/>
                </label>
            </div>
            {move || match outcome.get() {
                Some(Outcome::Link { link, copied }) => view! {
                    <input type="text" readonly data-testid="share-link" aria-label="Share link" prop:value=link
                        on:focus=select_all/>
                    <p class="muted" data-testid="share-copied">
                        {if copied { "Copied to the clipboard." } else { "Select the link and copy it." }}
                    </p>
                }.into_any(),
                Some(Outcome::File { why, .. }) => view! {
                    <p class="notice" data-testid="share-too-long">
                        {format!("This demo is too long for a link: {why}. Save it as a file instead; Aviary opens it too.")}
                    </p>
                    <button data-testid="share-download" on:click=save_file>"Download .aviary.json"</button>
                }.into_any(),
                Some(Outcome::Failed(e)) => view! { <p class="error" data-testid="share-failed">{e}</p> }.into_any(),
                None => ().into_any(),
            }}
            <ul class="muted" hidden=move || left_out.with(|l| l.is_empty())>
                {move || left_out.get().into_iter().map(|t| view! { <li>{format!("Not included: {t}.")}</li> }).collect_view()}
            </ul>
        </section>
    }
}
