//! The app's modules that its browser tests (app/tests/web_*.rs) exercise directly; the page binary uses them
//! from here.

// Pure Rust, so its unit tests run natively.
pub mod markdown;

#[cfg(target_arch = "wasm32")]
pub mod conversations;
