//! The app as an installable, offline PWA: registers the service worker (public/sw.js, stamped by
//! scripts/stamp-sw.sh), says when a new version waits, and tracks whether the browser is online.
//!
//! A new version never takes over by itself: the worker waits, `PwaState::update_ready` turns on, and the page
//! switches only when the user accepts (`apply_update`), then reloads once the new worker controls it. Switching
//! the shell under a running generation would leave the page on wasm whose cached files the new worker deletes.
//!
//! Everything here is optional: where service workers are missing (plain http off localhost, a browser that blocks
//! them) or registration fails, the app says so in the console and runs as an ordinary page.

use leptos::prelude::*;
use std::cell::{Cell, RefCell};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{ServiceWorker, ServiceWorkerContainer, ServiceWorkerRegistration, ServiceWorkerState};

/// How often a long-open tab asks whether a new version was published.
const UPDATE_EVERY_MS: i32 = 30 * 60 * 1000;

/// The PWA's state, provided once by `App` (`start`).
#[derive(Clone, Copy)]
pub struct PwaState {
    /// `navigator.onLine`, kept current by the window's online/offline events.
    pub online: RwSignal<bool>,
    /// A new version's worker is installed and waits for the user's go-ahead.
    pub update_ready: RwSignal<bool>,
}

thread_local! {
    static REGISTRATION: RefCell<Option<ServiceWorkerRegistration>> = const { RefCell::new(None) };
    // Only a switch the user asked for reloads the page: the first install also changes the controller (the worker
    // claims the open page), and reloading then would restart a model load for nothing.
    static RELOAD_ON_CHANGE: Cell<bool> = const { Cell::new(false) };
}

fn warn(what: &str, e: &JsValue) {
    web_sys::console::warn_2(&format!("aviary: {what}; the app works, but not offline:").into(), e);
}

/// Provides `PwaState` and starts the service worker's registration in the background.
pub fn start() -> PwaState {
    let window = web_sys::window().expect("a window");
    let state = PwaState { online: RwSignal::new(window.navigator().on_line()), update_ready: RwSignal::new(false) };
    provide_context(state);
    for (event, online) in [("online", true), ("offline", false)] {
        let on = Closure::<dyn FnMut()>::new(move || state.online.set(online));
        let _ = window.add_event_listener_with_callback(event, on.as_ref().unchecked_ref());
        on.forget(); // for the page's life
    }
    if let Some(container) = container() {
        wasm_bindgen_futures::spawn_local(register(container, state));
    } else {
        web_sys::console::info_1(&"aviary: no service workers here (not a secure context?); the app works, but not offline".into());
    }
    state
}

/// `navigator.serviceWorker`, where it exists: it is undefined outside secure contexts, and calling into it then
/// would throw.
fn container() -> Option<ServiceWorkerContainer> {
    let navigator = web_sys::window()?.navigator();
    let c = js_sys::Reflect::get(&navigator, &"serviceWorker".into()).ok()?;
    (!c.is_undefined() && !c.is_null()).then(|| c.unchecked_into())
}

async fn register(container: ServiceWorkerContainer, state: PwaState) {
    let reg = match wasm_bindgen_futures::JsFuture::from(container.register("./sw.js")).await {
        Ok(r) => r.unchecked_into::<ServiceWorkerRegistration>(),
        Err(e) => return warn("registering the service worker failed", &e),
    };
    let on_change = Closure::<dyn FnMut()>::new(move || {
        if RELOAD_ON_CHANGE.get() {
            let _ = web_sys::window().map(|w| w.location().reload());
        }
    });
    container.set_oncontrollerchange(Some(on_change.as_ref().unchecked_ref()));
    on_change.forget();

    // A version that was published while the app was closed (or in another tab) may already wait.
    if reg.waiting().is_some() && container.controller().is_some() {
        state.update_ready.set(true);
    }
    if let Some(w) = reg.installing() {
        watch_install(w, state);
    }
    let on_found = Closure::<dyn FnMut()>::new({
        let reg = reg.clone();
        move || {
            if let Some(w) = reg.installing() {
                watch_install(w, state);
            }
        }
    });
    reg.set_onupdatefound(Some(on_found.as_ref().unchecked_ref()));
    on_found.forget();

    REGISTRATION.set(Some(reg));
    check_for_update();
    let tick = Closure::<dyn FnMut()>::new(check_for_update);
    if let Some(w) = web_sys::window() {
        let _ = w.set_interval_with_callback_and_timeout_and_arguments_0(tick.as_ref().unchecked_ref(), UPDATE_EVERY_MS);
    }
    tick.forget();
}

/// An installing worker that reaches `installed` while a controller exists is an update (without one, it is the
/// first install, which takes the page by itself).
fn watch_install(worker: ServiceWorker, state: PwaState) {
    let w = worker.clone();
    let on_state = Closure::<dyn FnMut()>::new(move || {
        let controlled = container().is_some_and(|c| c.controller().is_some());
        if w.state() == ServiceWorkerState::Installed && controlled {
            state.update_ready.set(true);
        }
    });
    worker.set_onstatechange(Some(on_state.as_ref().unchecked_ref()));
    on_state.forget();
}

/// Asks the server for a new sw.js. Offline (or on a server error) the check fails; the next one tries again.
pub fn check_for_update() {
    let Some(promise) = REGISTRATION.with_borrow(|r| r.as_ref().and_then(|r| r.update().ok())) else { return };
    wasm_bindgen_futures::spawn_local(async move {
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    });
}

/// The user took the update: the waiting worker takes over, and the page reloads when it controls the page.
pub fn apply_update() {
    RELOAD_ON_CHANGE.set(true);
    let waiting = REGISTRATION.with_borrow(|r| r.as_ref().and_then(|r| r.waiting()));
    let message = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&message, &"type".into(), &"skip-waiting".into());
    match waiting.map(|w| w.post_message(&message)) {
        Some(Ok(())) => {}
        // Another tab may have switched already: the new version only needs a reload.
        _ => {
            let _ = web_sys::window().map(|w| w.location().reload());
        }
    }
}
