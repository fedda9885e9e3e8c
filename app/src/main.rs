//! Aviary's browser app: a Leptos (CSR) page. The engine runs in a Web Worker (src/bin/worker/); `bridge` is the
//! typed channel to it, `state` the shared signals, `components/` one view per file.

// Pure Rust, so its unit tests run natively; only the wasm build uses it.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod format;

#[cfg(target_arch = "wasm32")]
use aviary_app::{conversations, datasets, markdown};

#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod bridge;
#[cfg(target_arch = "wasm32")]
mod components;
#[cfg(target_arch = "wasm32")]
mod dataset_persist;
#[cfg(target_arch = "wasm32")]
mod files;
#[cfg(target_arch = "wasm32")]
mod pwa;
#[cfg(target_arch = "wasm32")]
mod share_link;
#[cfg(target_arch = "wasm32")]
mod state;

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the Aviary app runs in a browser: build and serve it with `make run`");
    std::process::exit(1);
}
