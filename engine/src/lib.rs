//! Aviary's engine: read a model (GGUF or safetensors), tokenize, render its chat template, and run ONE
//! transformer definition over a backend (CPU via candle; GPU via wgpu + our WGSL).

pub mod backend;
pub mod batch;
pub mod chat;
pub mod compare;
pub mod config;
pub mod error;
pub mod format;
pub mod lora;
pub mod magpie;
pub mod model;
pub mod prompt;
pub mod protocol;
pub mod quant;
pub mod sampling;
pub mod session;
pub mod source;
pub mod synth;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};
