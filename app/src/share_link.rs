//! A demo as a share link and back. `capture` reads the page into a `share::ShareState`; `restore` puts one back
//! once the user has accepted it: settings, view and conversation at once, then the model and its adapters by
//! loading them, from storage when they are there. The link's format, caps and checks are the `share` crate's;
//! everything a link holds is untrusted, so here it only ever becomes signal values that views show as text.

use crate::bridge::Bridge;
use crate::components::conversations::{new_conversation, Conversations};
use crate::state::{
    ActiveView, BackendPreference, Chat, DatasetState, LoadedLora, LoraState, LoraStatus, ModelState, Reply, Role,
    Settings, ShareInbox, Status, Storage, View,
};
use engine::protocol::{BackendChoice, BackendInfo, Origin, Request};
use engine::session::StopReason;
use leptos::prelude::*;
use share::{AdapterRef, Message, ModelRef, ModelSource, ShareState};
use wasm_bindgen::prelude::*;

/// The page's state as a link would carry it, and what the link cannot carry.
pub struct Captured {
    pub state: ShareState,
    pub left_out: Vec<String>,
}

/// What "Copy link" made.
pub enum Made {
    /// The whole link.
    Link(String),
    /// Too long for a URL (`why`); the same state as a `.aviary.json` file's text.
    File { why: String, json: String },
}

/// Reads the page: the model (when it came from a URL), the adapters with their switches and scales, the system
/// prompt, the conversation, every sampling setting and the seed, the backend the model runs on, the view, and the
/// Magpie and synthesis forms.
pub fn capture() -> Captured {
    let model = expect_context::<ModelState>();
    let storage = expect_context::<Storage>();
    let settings = expect_context::<Settings>();
    let chat = expect_context::<Chat>();
    let lora = expect_context::<LoraState>();
    let ds = expect_context::<DatasetState>();
    let mut left_out = Vec::new();

    let model_ref = model.card.with_untracked(|card| {
        let card = card.as_ref()?;
        if storage.origin.with_untracked(|o| matches!(o, Some(Origin::Local))) {
            left_out.push(format!("the model ({}) was opened from this computer's files, so the link cannot bring it", card.name));
            return None;
        }
        Some(ModelRef { source: model_source(&card.source), name: Some(card.name.clone()), size_bytes: Some(card.file_bytes) })
    });
    let adapters = lora.adapters.with_untracked(|list| {
        list.iter()
            .filter_map(|a| match &a.url {
                Some(url) => Some(AdapterRef {
                    url: aviary_app::js::absolute_url(url),
                    name: a.name.clone(),
                    enabled: a.enabled,
                    scale: a.scale,
                    size_bytes: (a.bytes > 0).then_some(a.bytes),
                }),
                None => {
                    left_out.push(format!("the adapter {} was opened from files, so the link cannot bring it", a.name));
                    None
                }
            })
            .collect()
    });
    let messages = chat.messages.with_untracked(|all| {
        all.iter()
            .filter(|m| !matches!(m.reply.get_untracked(), Reply::Failed(_)))
            .map(|m| Message {
                role: match m.role {
                    Role::User => share::Role::User,
                    Role::Assistant => share::Role::Assistant,
                },
                text: m.text.get_untracked(),
            })
            .collect()
    });
    let backend = model.backend.with_untracked(|b| match b {
        Some(BackendInfo::Cpu { .. }) => Some(BackendChoice::Cpu),
        Some(BackendInfo::Gpu { .. }) => Some(BackendChoice::Gpu),
        None => None,
    });
    // A Magpie form without its pre-query template (no model has filled it in yet) is nothing to restore.
    let magpie = ds.form.with_untracked(|f| (!f.settings.pre_query_template.is_empty()).then(|| f.settings.clone()));
    let view = match expect_context::<ActiveView>().0.get_untracked() {
        // Training and comparing happen in a page, not in a link: such a page shares as its chat.
        View::Chat | View::Train | View::Compare => share::View::Chat,
        View::Magpie => share::View::Magpie,
        View::Synth => share::View::Synthesis,
    };
    let state = ShareState {
        view,
        model: model_ref,
        adapters,
        system_prompt: settings.system_prompt.get_untracked(),
        messages,
        sampling: untrack(|| settings.sampling()),
        max_tokens: settings.max_tokens.get_untracked().min(share::MAX_TOKENS_CAP as usize) as u32,
        backend,
        magpie,
        synthesis: Some(ds.synth.settings.get_untracked()),
        ..ShareState::default()
    };
    Captured { state, left_out }
}

/// A link to `state`, or, when it is too long for one, the file to offer instead.
pub fn make(state: &ShareState) -> Result<Made, String> {
    let too_long = |why: String| share::to_file_json(state).map(|json| Made::File { why, json }).map_err(|e| e.to_string());
    match share::fragment(state) {
        Ok(fragment) => {
            let link = format!("{}#{fragment}", page_base());
            if share::fits_in_link(&link) {
                Ok(Made::Link(link))
            } else {
                too_long(format!(
                    "the link would be {} long, more than the {} a browser's address bar handles well",
                    crate::format::bytes(link.len() as u64),
                    crate::format::bytes(share::LINK_LIMIT as u64)
                ))
            }
        }
        Err(e @ (share::Error::TooLongForLink { .. } | share::Error::StateTooLarge { .. })) => too_long(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The app's address without its query or fragment: what a link's fragment is appended to. The query is left out
/// because the link itself says which model to load, and `?model=` would load one before the user accepts.
fn page_base() -> String {
    let Some(location) = web_sys::window().map(|w| w.location()) else { return String::new() };
    format!("{}{}", location.origin().unwrap_or_default(), location.pathname().unwrap_or_default())
}

/// A model's absolute URL as a link names it: relative to the app when the app serves it (so the link works for
/// whoever serves the app elsewhere), else the URL itself.
fn model_source(absolute: &str) -> ModelSource {
    let base = aviary_app::js::absolute_url("./");
    match absolute.strip_prefix(&base) {
        Some(path) if is_plain_path(path) => ModelSource::Catalog(path.to_string()),
        _ => ModelSource::Url(absolute.to_string()),
    }
}

/// The share crate's rule for a catalog path (checked here first, so a link is not refused for a file name with
/// other characters: such a model travels as its URL).
fn is_plain_path(path: &str) -> bool {
    path.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b))
        && path.split('/').all(|part| !part.is_empty() && part != "..")
}

/// Where the app loads a link's model from.
pub fn model_url(m: &ModelRef) -> String {
    match &m.source {
        ModelSource::Catalog(path) => path.clone(),
        ModelSource::Url(url) => url.clone(),
    }
}

/// Loads the model the page names (`?model=`, else the default), as a page opened without a share link does.
pub fn load_plainly() {
    let model = expect_context::<ModelState>();
    model.status.set(Status::Loading);
    expect_context::<Bridge>().send(Request::Load {
        url: model.url.get_untracked(),
        backend: expect_context::<BackendPreference>().0.get_untracked(),
        context: None,
    });
}

/// Reads a share link in the page's address now and whenever the fragment changes (a link pasted into an open
/// tab). Returns whether one is waiting for the user's answer, in which case nothing should load yet.
pub fn watch_location() -> bool {
    // Read here: the listener runs outside the component tree, where contexts cannot be looked up.
    let inbox = expect_context::<ShareInbox>();
    let waits = read_fragment(inbox);
    if let Some(w) = web_sys::window() {
        let on_change = Closure::<dyn FnMut()>::new(move || {
            read_fragment(inbox);
        });
        let _ = w.add_event_listener_with_callback("hashchange", on_change.as_ref().unchecked_ref());
        on_change.forget(); // as long as the page
    }
    waits
}

/// Puts the fragment's link, if there is one, before the user. A broken link is reported and dropped from the
/// address, so a reload opens the app plainly.
fn read_fragment(inbox: ShareInbox) -> bool {
    let hash = web_sys::window().and_then(|w| w.location().hash().ok()).unwrap_or_default();
    let fragment = hash.strip_prefix('#').unwrap_or(&hash);
    if !fragment.starts_with(share::FRAGMENT_KEY) {
        return false;
    }
    match share::parse_fragment(fragment) {
        Ok(state) => {
            inbox.error.set(None);
            inbox.incoming.set(Some(state));
            true
        }
        Err(e) => {
            inbox.error.set(Some(format!("This share link cannot be opened: {e}. The app opened as usual.")));
            clear_fragment();
            false
        }
    }
}

/// Opens a `.aviary.json` file's text as a link would be.
pub fn open_file(inbox: ShareInbox, name: &str, bytes: &[u8]) {
    match share::from_file_json(bytes) {
        Ok(state) => {
            inbox.error.set(None);
            inbox.incoming.set(Some(state));
        }
        Err(e) => inbox.error.set(Some(format!("{name} cannot be opened: {e}"))),
    }
}

/// Drops `#share=…` from the address (without a new history entry), so a reload does not ask again.
pub fn clear_fragment() {
    let Some(w) = web_sys::window() else { return };
    let location = w.location();
    let plain = format!(
        "{}{}",
        location.pathname().unwrap_or_default(),
        location.search().unwrap_or_default()
    );
    if let Ok(history) = w.history() {
        let _ = history.replace_state_with_url(&JsValue::NULL, "", Some(&plain));
    }
}

/// Applies an accepted link: the settings, the view and the conversation at once (the conversation the chat
/// showed is saved and stays in the list), then the model, whose `Ready` loads the link's adapters with their
/// switches and scales (bridge/lora.rs reloads URL adapters for every new model).
pub fn restore(s: ShareState) {
    let settings = expect_context::<Settings>();
    let ds = expect_context::<DatasetState>();
    let chat = expect_context::<Chat>();
    let lora = expect_context::<LoraState>();
    let model = expect_context::<ModelState>();
    let inbox = expect_context::<ShareInbox>();
    let mut notes = Vec::new();

    settings.system_prompt.set(s.system_prompt);
    settings.max_tokens.set((s.max_tokens as usize).max(1));
    crate::components::settings::apply_sampling(&settings, s.sampling);
    if let Some(b) = s.backend {
        expect_context::<BackendPreference>().0.set(b);
    }
    if let Some(m) = s.magpie {
        ds.form.update(|f| f.settings = m);
        ds.touch();
    }
    if let Some(y) = s.synthesis {
        ds.synth.settings.set(y);
    }
    expect_context::<ActiveView>().0.set(match s.view {
        share::View::Chat => View::Chat,
        share::View::Magpie => View::Magpie,
        share::View::Synthesis => View::Synth,
    });

    new_conversation(expect_context::<Conversations>());
    let messages: Vec<_> = s
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                share::Role::User => Role::User,
                share::Role::Assistant => Role::Assistant,
            };
            chat.new_message(role, &m.text, Reply::Done(StopReason::StopToken))
        })
        .collect();
    let count = messages.len();
    chat.messages.set(messages);

    // Placeholders the next `Ready` fills in (an adapter is fitted to a model, so none can load before it).
    let adapters = s.adapters.iter().enumerate().map(|(i, a)| LoadedLora {
        id: u64::MAX - i as u64,
        // The worker's name for it, which its errors are reported under (the link's name is only shown).
        name: aviary_app::js::file_name(&a.url),
        info: engine::lora::LoraInfo {
            kind: engine::lora::LoraKind::Gguf,
            rank: (0, 0),
            targets: Vec::new(),
            layers: 0,
            parameters: 0,
        },
        url: Some(a.url.clone()),
        bytes: a.size_bytes.unwrap_or(0),
        enabled: a.enabled,
        scale: a.scale,
        status: LoraStatus::Reloading,
    });
    let bridge = expect_context::<Bridge>();
    for a in lora.adapters.get_untracked() {
        bridge.send(Request::RemoveLora { id: a.id });
    }
    lora.adapters.set(adapters.collect());
    lora.error.set(None);

    match &s.model {
        Some(m) => {
            let url = model_url(m);
            model.url.set(url.clone());
            model.status.set(Status::Loading);
            model.card.set(None);
            chat.streaming.set(None);
            bridge.send(Request::Load { url, backend: expect_context::<BackendPreference>().0.get_untracked(), context: None });
        }
        None => {
            notes.push("The link names no model: load one, and the link's adapters load for it.".to_string());
            if model.card.with_untracked(|c| c.is_some()) {
                // The loaded model stays: the adapters are fitted to it now.
                for a in &s.adapters {
                    lora.pending.update(|n| *n += 1);
                    bridge.send(Request::LoadLora { url: a.url.clone() });
                }
            }
        }
    }
    inbox.notes.set(notes);
    inbox.restored.set(Some(count));
    clear_fragment();
}
