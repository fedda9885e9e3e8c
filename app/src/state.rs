//! The app's shared state: signals wrapped in context newtypes, provided once by `App` and read by any component
//! with `expect_context::<T>()`.

use engine::protocol::{BackendChoice, BackendInfo, CacheEntry, LoadStats, ModelCard, Origin, Stage, Store};
use engine::session::{Stats, StopReason};
use leptos::prelude::*;

pub use crate::conversations::TokenChip;

/// Where the model stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// The worker is starting.
    Starting,
    /// No model is loaded.
    Empty,
    Loading,
    Ready,
    Generating,
    Failed(String),
}

/// Load progress, with when it started (ms, `Date.now`) for speed and time left.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub stage: Stage,
    pub done: u64,
    pub total: u64,
    pub started_ms: f64,
    pub now_ms: f64,
}

/// The model: what is loaded, on what, and how loading goes.
#[derive(Clone, Copy)]
pub struct ModelState {
    pub status: RwSignal<Status>,
    pub url: RwSignal<String>,
    pub progress: RwSignal<Option<Progress>>,
    pub card: RwSignal<Option<ModelCard>>,
    pub backend: RwSignal<Option<BackendInfo>>,
    pub load: RwSignal<Option<LoadStats>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// How an assistant message stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Streaming,
    Done(StopReason),
    Failed(String),
}

/// One message of the conversation; its text is a signal of its own so streaming touches one node.
#[derive(Clone, Copy)]
pub struct ChatMessage {
    pub id: u64,
    pub role: Role,
    pub text: RwSignal<String>,
    pub reply: RwSignal<Reply>,
    pub stats: RwSignal<Option<Stats>>,
    /// A reply's streamed pieces with the candidates the model weighed for each (for the token view).
    pub tokens: RwSignal<Vec<TokenChip>>,
}

impl ChatMessage {
    fn new(id: u64, role: Role, text: &str, reply: Reply) -> Self {
        ChatMessage {
            id,
            role,
            text: RwSignal::new(text.to_string()),
            reply: RwSignal::new(reply),
            stats: RwSignal::new(None),
            tokens: RwSignal::new(Vec::new()),
        }
    }
}

/// A saved conversation as the list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationEntry {
    pub id: u64,
    pub title: String,
    pub updated_ms: f64,
}

/// The conversation, and which reply (by generation id) is streaming.
#[derive(Clone, Copy)]
pub struct Chat {
    pub messages: RwSignal<Vec<ChatMessage>>,
    pub streaming: RwSignal<Option<u64>>,
    pub next_id: RwSignal<u64>,
    /// The saved conversation these messages belong to (None until the first message).
    pub conversation: RwSignal<Option<u64>>,
    /// Every saved conversation, most recent first.
    pub conversations: RwSignal<Vec<ConversationEntry>>,
    /// Why saving or reading conversations failed, if it did.
    pub storage_error: RwSignal<Option<String>>,
    /// The app's owner, which new messages' signals belong to: a message created from a click inside another
    /// message (Regenerate, Edit) must outlive that message's view.
    pub owner: StoredValue<Owner, LocalStorage>,
}

impl Chat {
    /// A new message whose signals live as long as the app.
    pub fn new_message(&self, role: Role, text: &str, reply: Reply) -> ChatMessage {
        let id = self.fresh_id();
        self.owner.with_value(|o| o.with(|| ChatMessage::new(id, role, text, reply)))
    }

    pub fn fresh_id(&self) -> u64 {
        let id = self.next_id.get_untracked();
        self.next_id.set(id + 1);
        id
    }

    /// The assistant message a generation writes to.
    pub fn reply(&self, id: u64) -> Option<ChatMessage> {
        self.messages.with_untracked(|m| m.iter().find(|m| m.id == id && m.role == Role::Assistant).copied())
    }
}

/// Generation settings.
#[derive(Clone, Copy)]
pub struct Settings {
    pub system_prompt: RwSignal<String>,
    /// 0 = greedy.
    pub temperature: RwSignal<f32>,
    pub seed: RwSignal<u64>,
    pub max_tokens: RwSignal<usize>,
    /// 0 = off.
    pub top_k: RwSignal<usize>,
    /// 1 = off.
    pub top_p: RwSignal<f32>,
    /// 0 = off.
    pub min_p: RwSignal<f32>,
    /// 1 = off.
    pub repeat_penalty: RwSignal<f32>,
    pub repeat_last_n: RwSignal<usize>,
}

/// The backend the next Load asks for (the adapter panel's choice, or `?backend=cpu|gpu` in the page URL).
#[derive(Clone, Copy)]
pub struct BackendPreference(pub RwSignal<BackendChoice>);

/// The models kept in the browser's storage, as the worker last listed them, the storage's quota, and where the
/// loaded model's bytes came from.
#[derive(Clone, Copy)]
pub struct Storage {
    pub entries: RwSignal<Vec<CacheEntry>>,
    pub store: RwSignal<Option<Store>>,
    /// Why models are not kept (or kept only in Cache Storage), when that is so.
    pub note: RwSignal<Option<String>>,
    /// Whether the worker has answered a listing yet.
    pub listed: RwSignal<bool>,
    /// `navigator.storage.estimate()`: (usage, quota) in bytes.
    pub estimate: RwSignal<Option<(u64, u64)>>,
    pub origin: RwSignal<Option<Origin>>,
}

impl Storage {
    /// The complete stored copy of `absolute_url`, if any.
    pub fn cached(&self, absolute_url: &str) -> Option<CacheEntry> {
        self.entries.with(|e| e.iter().find(|e| e.complete && e.url == absolute_url).cloned())
    }
}

/// Creates and provides every context newtype.
pub fn provide_state(default_url: String) {
    provide_context(ModelState {
        status: RwSignal::new(Status::Starting),
        url: RwSignal::new(default_url),
        progress: RwSignal::new(None),
        card: RwSignal::new(None),
        backend: RwSignal::new(None),
        load: RwSignal::new(None),
    });
    provide_context(Chat {
        messages: RwSignal::new(Vec::new()),
        streaming: RwSignal::new(None),
        next_id: RwSignal::new(1),
        conversation: RwSignal::new(None),
        conversations: RwSignal::new(Vec::new()),
        storage_error: RwSignal::new(None),
        owner: StoredValue::new_local(Owner::current().unwrap_or_default()),
    });
    provide_context(Storage {
        entries: RwSignal::new(Vec::new()),
        store: RwSignal::new(None),
        note: RwSignal::new(None),
        listed: RwSignal::new(false),
        estimate: RwSignal::new(None),
        origin: RwSignal::new(None),
    });
    provide_context(Settings {
        system_prompt: RwSignal::new(String::new()),
        temperature: RwSignal::new(0.0),
        seed: RwSignal::new(0),
        max_tokens: RwSignal::new(256),
        top_k: RwSignal::new(0),
        top_p: RwSignal::new(1.0),
        min_p: RwSignal::new(0.0),
        repeat_penalty: RwSignal::new(1.0),
        repeat_last_n: RwSignal::new(64),
    });
    provide_context(BackendPreference(RwSignal::new(BackendChoice::Auto)));
}
