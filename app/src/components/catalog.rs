//! Models to pick from: the ones the app's own server offers, and public GGUFs on Hugging Face. Clicking one fills
//! the URL and loads it; those already in the browser's storage say so (they load without a download), and the rest
//! say they need the network — offline, their Load is disabled rather than left to fail.

use crate::components::models::{absolute, load_url};
use crate::format;
use crate::pwa::PwaState;
use crate::state::{ModelState, Status, Storage};
use leptos::prelude::*;

struct Item {
    name: &'static str,
    url: &'static str,
    /// The file's size (for the public ones, as Hugging Face lists it).
    bytes: u64,
    about: &'static str,
    /// Shown only when the server answers a HEAD request for it (it is not part of every install).
    probe: bool,
}

const CATALOG: &[Item] = &[
    Item {
        name: "SmolLM2 135M Instruct (Q4_1)",
        url: crate::app::DEFAULT_MODEL_URL,
        bytes: 98_362_432,
        about: "the default; served by this app",
        probe: false,
    },
    Item {
        name: "Gemma 3 270M (Q4_K_M)",
        url: "models/gemma-3-270m-q4_k_m.gguf",
        bytes: 253_113_024,
        about: "base model, no chat template; served by this app",
        probe: true,
    },
    Item {
        name: "SmolLM2 360M Instruct (Q4_K_M)",
        url: "https://huggingface.co/bartowski/SmolLM2-360M-Instruct-GGUF/resolve/main/SmolLM2-360M-Instruct-Q4_K_M.gguf",
        bytes: 270_590_880,
        about: "Hugging Face, bartowski",
        probe: false,
    },
    Item {
        name: "Llama 3.2 1B Instruct (Q4_K_M)",
        url: "https://huggingface.co/bartowski/Llama-3.2-1B-Instruct-GGUF/resolve/main/Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        bytes: 807_694_464,
        about: "Hugging Face, bartowski",
        probe: false,
    },
    Item {
        name: "Gemma 2 2B Instruct (Q4_K_M)",
        url: "https://huggingface.co/bartowski/gemma-2-2b-it-GGUF/resolve/main/gemma-2-2b-it-Q4_K_M.gguf",
        bytes: 1_708_582_752,
        about: "Hugging Face, bartowski",
        probe: false,
    },
];

/// Whether the server has `url` (a HEAD request answered 2xx). Offline the request fails, which means no: the entry
/// stays hidden (unless it is stored, which is enough to load it) until the browser is back online and asks again.
async fn server_has(url: &str) -> bool {
    let init = web_sys::RequestInit::new();
    init.set_method("HEAD");
    let Some(window) = web_sys::window() else { return false };
    let Ok(resp) = wasm_bindgen_futures::JsFuture::from(window.fetch_with_str_and_init(url, &init)).await else {
        return false;
    };
    resp.dyn_into::<web_sys::Response>().is_ok_and(|r| r.ok())
}

use wasm_bindgen::JsCast;

#[component]
pub fn Catalog() -> impl IntoView {
    let model = expect_context::<ModelState>();
    let storage = expect_context::<Storage>();
    let online = expect_context::<PwaState>().online;
    let busy = move || matches!(model.status.get(), Status::Loading | Status::Starting);
    view! {
        <section class="panel catalog" data-testid="catalog">
            <h2>"Catalog"</h2>
            <ul class="entries">
                {CATALOG
                    .iter()
                    .map(|item| {
                        let absolute_url = absolute(item.url);
                        let cached = Memo::new(move |_| storage.cached(&absolute_url).is_some());
                        let shown = RwSignal::new(!item.probe);
                        if item.probe {
                            let url = item.url;
                            // Runs at once, and again whenever the browser comes back online.
                            Effect::new(move |_| {
                                if online.get() && !shown.get_untracked() {
                                    wasm_bindgen_futures::spawn_local(async move { shown.set(server_has(url).await) });
                                }
                            });
                        }
                        let offline_blocked = move || !online.get() && !cached.get();
                        let url = item.url;
                        view! {
                            <Show when=move || shown.get() || cached.get()>
                                <li class="entry" data-testid="catalog-entry" data-url=url>
                                    <div class="entry-text">
                                        <span class="entry-name">{item.name}</span>
                                        <span class="muted">
                                            {format!("{}, {}", format::bytes(item.bytes), item.about)}
                                            <Show when=move || cached.get()
                                                fallback=|| view! {
                                                    <span class="badge needs-network" data-testid="needs-network"
                                                        title="Not in this browser's storage: loading it downloads it">
                                                        "needs network"
                                                    </span>
                                                }>
                                                <span class="badge" data-testid="catalog-cached">"stored"</span>
                                            </Show>
                                        </span>
                                    </div>
                                    <div class="entry-actions">
                                        <button class="secondary" data-testid="catalog-load"
                                            disabled=move || busy() || offline_blocked()
                                            title=move || offline_blocked().then_some("Needs the network: you are offline")
                                            on:click=move |_| load_url(url.to_string())>"Load"</button>
                                    </div>
                                </li>
                            </Show>
                        }
                    })
                    .collect_view()}
            </ul>
        </section>
    }
}
