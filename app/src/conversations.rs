//! Conversations kept in the browser's IndexedDB, so they survive reloads: one object store of JSON records keyed by
//! the conversation's id. With datasets.rs (which reuses the request helpers here) the only modules that touch
//! IndexedDB; the page calls it from one place (the persistence effect beside the conversation list) and its
//! components read signals.

use engine::session::{Stats, StopReason, TokenInfo};
use js_sys::{Array, Function, Promise};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbOpenDbRequest, IdbRequest, IdbTransaction, IdbTransactionMode};

/// The database the app uses; tests open their own.
pub const DATABASE: &str = "aviary";
const STORE: &str = "conversations";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavedRole {
    User,
    Assistant,
}

/// One streamed piece of a reply and what the model weighed for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenChip {
    pub token: u32,
    pub text: String,
    #[serde(default)]
    pub info: Option<TokenInfo>,
}

/// A LoRA adapter that shaped a reply, and at what scale (what the reply's label names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraLabel {
    pub name: String,
    pub scale: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedMessage {
    pub role: SavedRole,
    pub text: String,
    /// How a reply ended; None while it streamed (a reload cut it short).
    #[serde(default)]
    pub stop: Option<StopReason>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub stats: Option<Stats>,
    #[serde(default)]
    pub tokens: Vec<TokenChip>,
    /// The adapters a reply was generated with (none: the base model).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lora: Vec<LoraLabel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: u64,
    pub title: String,
    /// Milliseconds since the epoch (`Date.now`).
    pub created_ms: f64,
    pub updated_ms: f64,
    pub messages: Vec<SavedMessage>,
}

/// A conversation's title: the start of its first user message, on one line.
pub fn title_of(messages: &[SavedMessage]) -> String {
    let first = messages.iter().find(|m| m.role == SavedRole::User).map(|m| m.text.as_str()).unwrap_or("");
    let line = first.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 60 { format!("{}…", line.chars().take(59).collect::<String>()) } else { line }
}

/// An open database.
pub struct Store {
    db: IdbDatabase,
}

/// A JS error as text; a DOMException keeps its name, which tells a full quota (QuotaExceededError) from the rest.
pub fn js_error(what: &str, e: JsValue) -> String {
    let detail = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.dyn_ref::<web_sys::DomException>().map(|e| format!("{}: {}", e.name(), e.message())))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    format!("{what}: {detail}")
}

/// Waits for a request's success (its result) or error.
pub async fn request(req: &IdbRequest, what: &str) -> Result<JsValue, String> {
    let promise = Promise::new(&mut |resolve: Function, reject: Function| {
        let r = req.clone();
        let ok = Closure::once_into_js(move |_: web_sys::Event| {
            let _ = resolve.call1(&JsValue::NULL, &r.result().unwrap_or(JsValue::UNDEFINED));
        });
        let r = req.clone();
        let err = Closure::once_into_js(move |_: web_sys::Event| {
            let e = r.error().ok().flatten().map(JsValue::from).unwrap_or_else(|| "unknown error".into());
            let _ = reject.call1(&JsValue::NULL, &e);
        });
        req.set_onsuccess(Some(ok.unchecked_ref()));
        req.set_onerror(Some(err.unchecked_ref()));
    });
    JsFuture::from(promise).await.map_err(|e| js_error(what, e))
}

/// Waits until a write transaction is committed (a request's success alone does not mean it is on disk).
pub async fn committed(tx: &IdbTransaction, what: &str) -> Result<(), String> {
    let promise = Promise::new(&mut |resolve: Function, reject: Function| {
        let done = Closure::once_into_js(move |_: web_sys::Event| {
            let _ = resolve.call0(&JsValue::NULL);
        });
        let t = tx.clone();
        let failed = Closure::once_into_js(move |_: web_sys::Event| {
            let e = t.error().map(JsValue::from).unwrap_or_else(|| "the transaction was aborted".into());
            let _ = reject.call1(&JsValue::NULL, &e);
        });
        tx.set_oncomplete(Some(done.unchecked_ref()));
        tx.set_onerror(Some(failed.unchecked_ref()));
        tx.set_onabort(Some(failed.unchecked_ref()));
    });
    JsFuture::from(promise).await.map(|_| ()).map_err(|e| js_error(what, e))
}

/// Opens (creating on first use) the database `name` at `version` with `stores` (plain key-value object stores).
pub async fn open_database(name: &str, version: u32, stores: &[&'static str], what: &str) -> Result<IdbDatabase, String> {
    let factory = web_sys::window()
        .ok_or("no window")?
        .indexed_db()
        .map_err(|e| js_error("IndexedDB is unavailable", e))?
        .ok_or("this browser offers no IndexedDB (private mode?)")?;
    let open: IdbOpenDbRequest = factory.open_with_u32(name, version).map_err(|e| js_error(what, e))?;
    let upgrade = Closure::<dyn FnMut(web_sys::IdbVersionChangeEvent)>::new({
        let open = open.clone();
        let stores = stores.to_vec();
        move |_| {
            if let Ok(db) = open.result().and_then(|r| r.dyn_into::<IdbDatabase>()) {
                for store in &stores {
                    if !db.object_store_names().contains(store) {
                        if let Err(e) = db.create_object_store(store) {
                            web_sys::console::error_2(&format!("aviary: creating the {store} store failed").into(), &e);
                        }
                    }
                }
            }
        }
    });
    open.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
    let db = request(&open, what).await;
    open.set_onupgradeneeded(None);
    drop(upgrade);
    db?.dyn_into::<IdbDatabase>().map_err(|_| "IndexedDB opened something that is not a database".to_string())
}

impl Store {
    /// Opens (creating on first use) the database `name`.
    pub async fn open(name: &str) -> Result<Store, String> {
        Ok(Store { db: open_database(name, VERSION, &[STORE], "opening IndexedDB").await? })
    }

    fn transaction(&self, mode: IdbTransactionMode) -> Result<(IdbTransaction, web_sys::IdbObjectStore), String> {
        let tx = self
            .db
            .transaction_with_str_and_mode(STORE, mode)
            .map_err(|e| js_error("starting an IndexedDB transaction", e))?;
        let store = tx.object_store(STORE).map_err(|e| js_error("opening the conversations store", e))?;
        Ok((tx, store))
    }

    /// Saves `c`, replacing the record with its id.
    pub async fn put(&self, c: &Conversation) -> Result<(), String> {
        let json = serde_json::to_string(c).map_err(|e| format!("saving a conversation: {e}"))?;
        let (tx, store) = self.transaction(IdbTransactionMode::Readwrite)?;
        store
            .put_with_key(&JsValue::from_str(&json), &JsValue::from_f64(c.id as f64))
            .map_err(|e| js_error("saving a conversation", e))?;
        committed(&tx, "saving a conversation").await
    }

    /// Every conversation, most recently updated first. Records that no longer parse are skipped (and logged), so
    /// one bad record does not hide the rest.
    pub async fn list(&self) -> Result<Vec<Conversation>, String> {
        let (_tx, store) = self.transaction(IdbTransactionMode::Readonly)?;
        let req = store.get_all().map_err(|e| js_error("reading conversations", e))?;
        let all: Array = request(&req, "reading conversations").await?.dyn_into().map_err(|_| "reading conversations: not a list")?;
        let mut out: Vec<Conversation> = all
            .iter()
            .filter_map(|v| {
                let parsed = v.as_string().map(|s| serde_json::from_str::<Conversation>(&s));
                match parsed {
                    Some(Ok(c)) => Some(c),
                    other => {
                        web_sys::console::warn_1(&format!("aviary: skipping an unreadable conversation: {other:?}").into());
                        None
                    }
                }
            })
            .collect();
        out.sort_by(|a, b| b.updated_ms.total_cmp(&a.updated_ms).then(b.id.cmp(&a.id)));
        Ok(out)
    }

    pub async fn get(&self, id: u64) -> Result<Option<Conversation>, String> {
        let (_tx, store) = self.transaction(IdbTransactionMode::Readonly)?;
        let req = store.get(&JsValue::from_f64(id as f64)).map_err(|e| js_error("reading a conversation", e))?;
        let v = request(&req, "reading a conversation").await?;
        match v.as_string() {
            None => Ok(None),
            Some(s) => serde_json::from_str(&s).map(Some).map_err(|e| format!("reading a conversation: {e}")),
        }
    }

    pub async fn delete(&self, id: u64) -> Result<(), String> {
        let (tx, store) = self.transaction(IdbTransactionMode::Readwrite)?;
        store.delete(&JsValue::from_f64(id as f64)).map_err(|e| js_error("deleting a conversation", e))?;
        committed(&tx, "deleting a conversation").await
    }

    /// Closes the connection (so a test can delete its database).
    pub fn close(self) {
        self.db.close();
    }
}
