//! A whole-file download, read chunk by chunk from the response body. The chunks stay JS `Uint8Array`s, handed
//! straight to storage, so the file never passes through wasm memory; the caller checks for cancellation and
//! reports progress between chunks.

use crate::js::{call, call_async, get, io, js_text};
use engine::error::HEAD_BYTES;
use engine::format::gguf::check_magic;
use engine::{Error, Result};
use js_sys::Uint8Array;
use std::cell::{Cell, RefCell};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::Response;

/// What a stored file is: the storage panel tells adapters from models, and an adapter's size is capped because
/// it is read whole into memory (a model only ever streams from storage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A model file, stored as it comes.
    Model,
    /// A model the app opens as a GGUF: its first bytes are checked as they arrive, so an HTML page or an error
    /// document stops the download there, before it is stored.
    GgufModel,
    Adapter,
}

impl Kind {
    pub fn max_bytes(self) -> Option<u64> {
        match self {
            Kind::Model | Kind::GgufModel => None,
            Kind::Adapter => Some(engine::lora::MAX_ADAPTER_BYTES),
        }
    }
}

pub struct Download {
    pub url: String,
    /// The body's length from Content-Length, 0 when the server does not say.
    pub total: u64,
    reader: JsValue,
    /// The most bytes this file may have (an adapter is read whole into memory later), and how many came so far.
    max_bytes: Option<u64>,
    received: Cell<u64>,
    /// The body's first bytes while they are still to be checked for the GGUF magic (`Kind::GgufModel`); None
    /// once they passed, or when nothing is checked.
    head: RefCell<Option<Vec<u8>>>,
}

impl Download {
    pub async fn start(url: &str) -> Result<Download> {
        Self::start_limited(url, None).await
    }

    /// Starts downloading a file of `kind`: an adapter's size is capped, a GGUF model's first bytes are checked.
    pub async fn start_kind(url: &str, kind: Kind) -> Result<Download> {
        let download = Self::start_limited(url, kind.max_bytes()).await?;
        if kind == Kind::GgufModel {
            *download.head.borrow_mut() = Some(Vec::new());
        }
        Ok(download)
    }

    /// Like `start`, but a body above `max_bytes` (by its Content-Length, or as it arrives when the server does not
    /// say) fails with `Error::Adapter` before it fills the storage.
    pub async fn start_limited(url: &str, max_bytes: Option<u64>) -> Result<Download> {
        let resp = call_async(&js_sys::global(), "fetch", &[&url.into()])
            .await
            .map_err(|e| io(format!("could not download {url} (is the server reachable?): {}", js_text(&e))))?;
        let resp: Response = resp.dyn_into().map_err(|_| io(format!("{url}: fetch gave no Response")))?;
        if !resp.ok() {
            return Err(Error::Http { url: url.to_string(), status: resp.status(), reason: resp.status_text() });
        }
        let total = resp
            .headers()
            .get("content-length")
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let body = get(&resp, "body")?;
        if body.is_null() || body.is_undefined() {
            return Err(io(format!("{url}: the response has no body")));
        }
        let download = Download {
            url: url.to_string(),
            total,
            reader: call(&body, "getReader", &[]).map_err(|e| io(format!("{url}: {}", js_text(&e))))?,
            max_bytes,
            received: Cell::new(0),
            head: RefCell::new(None),
        };
        download.check_size(total)?;
        Ok(download)
    }

    fn check_size(&self, bytes: u64) -> Result<()> {
        match self.max_bytes {
            Some(max) if bytes > max => {
                self.cancel();
                Err(Error::Adapter(format!(
                    "{} is larger than {max} bytes, the most an adapter may have (is it a model?)",
                    self.url
                )))
            }
            _ => Ok(()),
        }
    }

    /// The next piece of the body, or None at its end.
    pub async fn next_chunk(&self) -> Result<Option<Uint8Array>> {
        let r = call_async(&self.reader, "read", &[])
            .await
            .map_err(|e| io(format!("{}: the download broke off: {}", self.url, js_text(&e))))?;
        if get(&r, "done")?.as_bool().unwrap_or(false) {
            self.check_head(None)?;
            return Ok(None);
        }
        let value = get(&r, "value")?;
        let chunk = value
            .dyn_into::<Uint8Array>()
            .map_err(|_| io(format!("{}: the body gave a non-byte chunk", self.url)))?;
        self.received.set(self.received.get() + chunk.length() as u64);
        self.check_size(self.received.get())?;
        self.check_head(Some(&chunk))?;
        Ok(Some(chunk))
    }

    /// Adds `chunk` (None at the body's end) to the head still to be checked, and checks it once it holds the
    /// magic's four bytes (or the body ended first): a body that is not a GGUF fails with `Error::NotGguf`, and
    /// the connection is dropped.
    fn check_head(&self, chunk: Option<&Uint8Array>) -> Result<()> {
        let mut slot = self.head.borrow_mut();
        let Some(head) = slot.as_mut() else { return Ok(()) };
        if let Some(chunk) = chunk {
            let take = (HEAD_BYTES - head.len()).min(chunk.length() as usize) as u32;
            head.extend(chunk.subarray(0, take).to_vec());
        }
        if head.len() < 4 && chunk.is_some() {
            return Ok(());
        }
        let checked = if head.len() < 4 { Err(Error::NotGguf { head: head.clone() }) } else { check_magic(head) };
        *slot = None;
        if checked.is_err() {
            self.cancel();
        }
        checked
    }

    /// Stops reading (the connection is dropped).
    pub fn cancel(&self) {
        let _ = call(&self.reader, "cancel", &[]);
    }
}

/// Reports progress at most every `STEP` bytes, so a download posts hundreds of events, not tens of thousands.
pub struct Throttle {
    last: u64,
}

impl Throttle {
    const STEP: u64 = 1 << 20;

    pub fn new() -> Self {
        Throttle { last: 0 }
    }

    pub fn due(&mut self, done: u64) -> bool {
        if done >= self.last + Self::STEP {
            self.last = done;
            true
        } else {
            false
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}
