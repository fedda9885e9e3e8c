//! The worker bundle: hosts Aviary's engine off the page's thread (see host.rs). Its model sources and storage
//! are in the app's library (src/lib.rs), which the wasm tests share. scripts/build-web.sh builds it as a classic
//! worker script (wasm-bindgen's no-modules target), and the page starts it with `new Worker("./worker_loader.js")`
//! (or one of the other builds' loaders; the threaded build's pool is in pool.rs).

#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
mod pool;

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    #[cfg(target_feature = "atomics")]
    if pool::is_helper() {
        return;
    }
    host::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the Aviary worker runs in a browser: build the app with `make run`");
    std::process::exit(1);
}
