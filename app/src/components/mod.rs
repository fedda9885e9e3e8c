//! One view per file.

pub mod adapter;
pub mod catalog;
pub mod chat;
pub mod conversations;
pub mod message;
pub mod models;
pub mod settings;
pub mod status;
pub mod storage;
pub mod token_popup;
