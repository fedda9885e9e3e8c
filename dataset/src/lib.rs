//! Aviary's instruction datasets: the row schema, JSONL export/import (ShareGPT, OpenAI, Alpaca), quality filters,
//! LLM-judge tags, Magpie instruction clean-up and Instruction Pre-Training synthesis parsing.
//!
//! Pure Rust with no I/O, threads or engine dependency, so the engine, the CLI and the wasm32 app share it.

pub mod error;
pub mod filters;
pub mod formats;
pub mod judge;
pub mod row;
pub mod sanitize;
pub mod synth;

pub use error::{Error, Result};
pub use filters::{apply as apply_filters, FilterReport, FilterSettings, Preset, FILTER_NAMES};
pub use formats::{export, export_line, import, Format, ImportError, Imported};
pub use judge::{
    judge_prompt, parse_judge, DIFFICULTY, INPUT_QUALITY, JUDGE_PREFILL, TASK_CATEGORIES,
};
pub use row::{content_id, row_id, GenInputConfigs, Row, Tags, Turn};
pub use sanitize::{cut_at_newline, has_template_tokens, sanitize_instruction};
pub use synth::{
    augmented_jsonl, augmented_text, chunk_text, pairs_to_rows, parse_pairs, synth_prompt, Parsed,
    QaPair,
};
