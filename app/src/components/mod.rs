//! One view per file.

pub mod adapter;
pub mod chat;
pub mod message;
pub mod models;
pub mod settings;
pub mod status;
