//! One view per file.

pub mod catalog;
pub mod chat;
pub mod message;
pub mod models;
pub mod settings;
pub mod status;
pub mod storage;
