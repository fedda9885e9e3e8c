//! What the app's bundles and its wasm tests (tests/web_*.rs) share: the chat's Markdown, the conversation and dataset
//! stores, the rules both bundles follow for batch runs, and the worker's model sources and storage. The worker's
//! files live beside the worker that uses them (src/bin/worker/); they are compiled here once, as a library, so the
//! tests can reach them too.

// Pure Rust, so its unit tests run natively.
#[path = "bin/worker/gpu_probe.rs"]
pub mod gpu_probe;
pub mod markdown;
pub mod run_rules;

#[cfg(target_arch = "wasm32")]
pub mod conversations;
#[cfg(target_arch = "wasm32")]
pub mod datasets;

#[cfg(target_arch = "wasm32")]
#[path = "bin/worker/blob_source.rs"]
pub mod blob_source;
#[cfg(target_arch = "wasm32")]
#[path = "bin/worker/cache_storage.rs"]
pub mod cache_storage;
#[cfg(target_arch = "wasm32")]
#[path = "bin/worker/cached_source.rs"]
pub mod cached_source;
#[cfg(target_arch = "wasm32")]
#[path = "bin/worker/download.rs"]
pub mod download;
#[cfg(target_arch = "wasm32")]
#[path = "bin/worker/http_source.rs"]
pub mod http_source;
#[cfg(target_arch = "wasm32")]
#[path = "bin/worker/js.rs"]
pub mod js;
#[cfg(target_arch = "wasm32")]
#[path = "bin/worker/opfs.rs"]
pub mod opfs;
#[cfg(target_arch = "wasm32")]
#[path = "bin/worker/train_store.rs"]
pub mod train_store;
