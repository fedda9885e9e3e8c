//! One view per file.

pub mod adapter;
pub mod catalog;
pub mod chat;
pub mod compare;
pub mod conversations;
pub mod dataset_table;
pub mod lora;
pub mod loss_plot;
pub mod magpie;
pub mod message;
pub mod models;
pub mod number_field;
pub mod settings;
pub mod share;
pub mod share_preview;
pub mod status;
pub mod storage;
pub mod synth;
pub mod token_popup;
pub mod train;
pub mod update_prompt;
