//! The CPU kernels' thread pool in the threaded build (`+atomics`: the page starts it where it is cross-origin
//! isolated, so this module's memory can be shared). rayon's global pool takes this worker's own thread as its
//! thread 0 — the engine calls the kernels from it, and from inside the pool a product wakes no one up and waits for
//! nobody's wake-up, as natively under `on_worker_thread` — and one web worker per further core
//! (worker-threads_child.js), each instantiating this same module on the same memory and running one pool thread.
//!
//! The helpers are started, and awaited, before the pool is built: building it blocks this thread until every pool
//! thread runs, and the browser starts a worker's nested workers only while that worker's own thread is free. So each
//! helper first waits for its pool thread on a channel, and the pool's spawn handler sends the threads down it.

use js_sys::{Array, Promise};
use rayon::ThreadBuilder;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent, Worker};

/// Where the helpers take their pool threads from.
type Threads = Arc<Mutex<Receiver<ThreadBuilder>>>;

/// The pool's threads: one per core the browser reports, at most 8 (beyond that the products of these small
/// models are too short to share).
fn wanted_threads() -> usize {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    (scope.navigator().hardware_concurrency() as usize).clamp(1, 8)
}

/// Starts the helpers, then the pool; the number of threads, or why the kernels stay on this thread alone.
pub async fn start() -> Result<usize, String> {
    let threads = wanted_threads();
    if threads < 2 {
        return Ok(1);
    }
    let (send, receive) = channel::<ThreadBuilder>();
    let receive: Threads = Arc::new(Mutex::new(receive));
    let started = (1..threads)
        .map(|_| spawn_helper(&receive))
        .collect::<Result<Array, JsValue>>()
        .map_err(|e| format!("a CPU thread could not be started: {e:?}"))?;
    JsFuture::from(Promise::all(&started))
        .await
        .map_err(|e| format!("a CPU thread did not start: {e:?}"))?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .use_current_thread()
        .spawn_handler(move |thread| send.send(thread).map_err(|_| std::io::Error::other("the CPU threads are gone")))
        .build_global()
        .map_err(|e| e.to_string())?;
    Ok(threads)
}

/// A web worker on this module's memory that will run the next pool thread sent down `threads`; the promise
/// resolves once it has instantiated the module and waits for it.
fn spawn_helper(threads: &Threads) -> Result<JsValue, JsValue> {
    let worker = Worker::new("./worker-threads_child.js")?;
    let ready = Promise::new(&mut |resolve, reject| {
        let on_message = Closure::once_into_js(move |ev: MessageEvent| {
            let _ = resolve.call1(&JsValue::NULL, &ev.data());
        });
        worker.set_onmessage(Some(on_message.unchecked_ref()));
        let on_error = Closure::once_into_js(move |ev: JsValue| {
            let _ = reject.call1(&JsValue::NULL, &ev);
        });
        worker.set_onerror(Some(on_error.unchecked_ref()));
    });
    // The helper owns this reference from here: `pool_thread_run` takes it back from this address in its instance.
    let handle = Arc::into_raw(Arc::clone(threads)) as usize as u32;
    let message = Array::of3(&wasm_bindgen::module(), &wasm_bindgen::memory(), &JsValue::from(handle));
    if let Err(e) = worker.post_message(&message) {
        // SAFETY: the message did not go, so nothing else holds this reference.
        drop(unsafe { Arc::from_raw(handle as usize as *const Mutex<Receiver<ThreadBuilder>>) });
        return Err(e);
    }
    Ok(ready.into())
}

/// Helpers running [`stay_hot`]'s loop now.
static HOT: AtomicUsize = AtomicUsize::new(0);

/// How long a helper keeps looking for work with nothing found before it lets rayon put it to sleep, in ms.
const HOT_FOR_MS: f64 = 30.0;

/// Keeps every helper looking for work instead of asleep, until none has come for [`HOT_FOR_MS`]: call it while
/// work is coming (every decoded token does). A rayon thread that finds nothing sleeps after a few dozen tries, which
/// natively take as long as as many `sched_yield`s but in wasm (no yield) almost no time, so between two products of a
/// decoded token the helpers were asleep, and waking one (an `Atomics.notify` to another thread) cost about what
/// sharing the product saved. A helper in this loop takes each product's pieces as they come.
pub fn stay_hot() {
    let helpers = rayon::current_num_threads().saturating_sub(1);
    while HOT.load(Ordering::Acquire) < helpers {
        HOT.fetch_add(1, Ordering::AcqRel);
        rayon::spawn(|| {
            // Thread 0 (this worker's, should it pick the job up itself while waiting in a product) must return
            // to the engine at once.
            let mut last_work = js_sys::Date::now();
            while rayon::current_thread_index() != Some(0) {
                match rayon::yield_now() {
                    Some(rayon::Yield::Executed) => last_work = js_sys::Date::now(),
                    _ if js_sys::Date::now() - last_work > HOT_FOR_MS => break,
                    _ => std::hint::spin_loop(),
                }
            }
            HOT.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// A helper's entry (worker-threads_child.js calls it once its instance is ready): waits for its pool thread and
/// runs it, for as long as the page lives.
#[wasm_bindgen]
pub fn pool_thread_run(handle: u32) {
    // SAFETY: `handle` is the reference `spawn_helper` leaked for exactly this helper, in the memory this instance
    // shares.
    let threads = unsafe { Arc::from_raw(handle as usize as *const Mutex<Receiver<ThreadBuilder>>) };
    let next = threads.lock().ok().and_then(|r| r.recv().ok());
    drop(threads);
    if let Some(thread) = next {
        thread.run();
    }
}

/// Whether this instance is a pool helper rather than the engine's worker (the child script says so before it
/// instantiates the module, whose start function runs `main` in every instance).
pub fn is_helper() -> bool {
    js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("aviaryPoolHelper")).is_ok_and(|v| v.is_truthy())
}
