//! Share links for Aviary: what a demo looks like (view, model, adapters, prompt, conversation, settings) packed
//! into a URL fragment — `#share=v1.<payload>`, the payload being JSON, raw deflate, then base64url without padding —
//! or, for a conversation too long for a URL, into a `.aviary.json` file holding the same JSON.
//!
//! The fragment never reaches a server, but it reaches the app from anyone: every link and file is untrusted input.
//! [`decode`], [`parse_fragment`] and [`from_file_json`] cap the encoded size before decoding and the unpacked size
//! while inflating (a zip bomb allocates no more than the cap), check the format version, ignore unknown fields, and
//! validate every field (URLs http(s) only, numbers in range, text and lists capped); anything wrong is an [`Error`]
//! whose message can be shown as is. Nothing here panics on bad input.
//!
//! Text fields come back as plain strings, unescaped: the app must render them as text (Leptos text nodes, `value`
//! attributes), never as HTML or script, and must not load a model or adapter from a link without the user's click.
//!
//! Pure Rust with no I/O, so the wasm32 app and native tests share it.

mod codec;
mod error;
mod validate;

pub use codec::{
    decode, encode, fits_in_link, fragment, from_file_json, parse_fragment, to_file_json, FRAGMENT_KEY, LINK_LIMIT,
    MAX_FILE_BYTES, MAX_INFLATED_BYTES, MAX_LINK_CHARS,
};
pub use error::{Error, Result};
pub use validate::{
    MAX_ADAPTERS, MAX_COUNT, MAX_MESSAGES, MAX_MESSAGE_BYTES, MAX_NAME_BYTES, MAX_PROMPT_BYTES, MAX_SIZE_BYTES,
    MAX_TOKENS_CAP, MAX_URL_BYTES,
};

use engine::magpie::MagpieSettings;
use engine::protocol::BackendChoice;
use engine::sampling::SamplingParams;
use engine::synth::SynthSettings;
use serde::{Deserialize, Serialize};

/// The format version this build writes and the newest it reads.
pub const VERSION: u32 = 1;

/// What a link restores. Optional and list fields left out of a link take their defaults, and empty ones are left
/// out when writing, so short demos make short links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareState {
    pub version: u32,
    #[serde(default)]
    pub view: View,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<AdapterRef>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system_prompt: String,
    /// The conversation, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    /// Includes the seed, which with the same model, adapters and backend makes "Replay" reproduce a reply.
    #[serde(default = "SamplingParams::chat")]
    pub sampling: SamplingParams,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub magpie: Option<MagpieSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthesis: Option<SynthSettings>,
}

/// The chat settings panel's own default, so a link without the field restores what a fresh app would show.
fn default_max_tokens() -> u32 {
    256
}

impl Default for ShareState {
    fn default() -> Self {
        Self {
            version: VERSION,
            view: View::default(),
            model: None,
            adapters: Vec::new(),
            system_prompt: String::new(),
            messages: Vec::new(),
            sampling: SamplingParams::chat(),
            max_tokens: default_max_tokens(),
            backend: None,
            magpie: None,
            synthesis: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    #[default]
    Chat,
    Magpie,
    Synthesis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    pub source: ModelSource,
    /// Shown before the user accepts; never trusted to identify the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelSource {
    /// A model the app itself serves, named by its path relative to the app (e.g. `models/x.gguf`).
    Catalog(String),
    /// An absolute http(s) URL.
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterRef {
    pub url: String,
    #[serde(default)]
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// 0–2, as the Adapters panel's slider.
    #[serde(default = "one")]
    pub scale: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

fn yes() -> bool {
    true
}

fn one() -> f32 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[cfg(test)]
mod tests;
