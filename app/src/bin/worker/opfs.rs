//! Downloaded models in the Origin Private File System: one file per model in the `aviary-models` directory, and an
//! index (`index.json`) of what each file is. A download writes its file through a writable stream, which the
//! browser commits only on `close()`, and is marked complete in the index only after that; so an interrupted
//! download is never taken for a model (it is listed as partial, and deleted or replaced by the next download).

use crate::blob_source::BlobSource;
use crate::download::{Download, Kind, Throttle};
use crate::http_source::CancelCheck;
use crate::js::{call_async, file_name, get, io, js_error_name, js_text, object};
use engine::protocol::CacheEntry;
use engine::Error;
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::File;

/// The directory the app keeps its models in.
pub const DIR: &str = "aviary-models";
const INDEX: &str = "index.json";

/// One model file in the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub url: String,
    pub name: String,
    /// The OPFS file holding it.
    pub file: String,
    pub bytes: u64,
    pub saved_at_ms: f64,
    pub complete: bool,
    /// A LoRA adapter's file rather than a model (absent from indexes written before adapters).
    #[serde(default)]
    pub adapter: bool,
}

impl Record {
    pub fn entry(&self) -> CacheEntry {
        CacheEntry {
            url: self.url.clone(),
            name: self.name.clone(),
            bytes: self.bytes,
            saved_at_ms: self.saved_at_ms,
            complete: self.complete,
            adapter: self.adapter,
        }
    }
}

/// What `index.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub records: Vec<Record>,
}

impl Index {
    /// An unreadable index reads as empty: the models it named are downloaded again rather than trusted.
    pub fn from_json(bytes: &[u8]) -> Index {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{\"records\":[]}".into())
    }

    pub fn get(&self, url: &str) -> Option<&Record> {
        self.records.iter().find(|r| r.url == url)
    }

    /// The record of a finished download of `url`, if there is one.
    pub fn complete(&self, url: &str) -> Option<&Record> {
        self.get(url).filter(|r| r.complete)
    }

    /// Adds `record`, replacing any other of the same URL.
    pub fn put(&mut self, record: Record) {
        self.records.retain(|r| r.url != record.url);
        self.records.push(record);
    }

    pub fn remove(&mut self, url: &str) -> Option<Record> {
        let i = self.records.iter().position(|r| r.url == url)?;
        Some(self.records.remove(i))
    }

    /// The entries, newest first.
    pub fn entries(&self) -> Vec<CacheEntry> {
        let mut v: Vec<CacheEntry> = self.records.iter().map(Record::entry).collect();
        v.sort_by(|a, b| b.saved_at_ms.total_cmp(&a.saved_at_ms));
        v
    }
}

/// The OPFS file name for a URL: a stable hash, so any URL maps to a valid name.
pub fn file_for(url: &str) -> String {
    // FNV-1a, 64 bits: a name, not a security boundary; the index records which URL it holds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}.bin")
}

/// A failure worth telling apart: the storage refused (no OPFS, quota) or the network did.
pub enum StoreError {
    /// The storage cannot be used; loading can go on without it.
    Storage(String),
    /// Anything else (network, cancellation): the load fails with it.
    Other(Error),
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        StoreError::Other(e)
    }
}

fn storage(what: &str, e: &JsValue) -> StoreError {
    let text = js_text(e);
    if js_error_name(e).as_deref() == Some("QuotaExceededError") {
        StoreError::Storage(format!("the browser's storage is full ({what}: {text})"))
    } else {
        StoreError::Storage(format!("{what}: {text}"))
    }
}

/// The app's directory in OPFS.
pub struct Opfs {
    dir: JsValue,
}

impl Opfs {
    pub async fn open() -> std::result::Result<Opfs, String> {
        Self::open_dir(DIR).await
    }

    /// The directory `name` at the root of OPFS (tests use their own).
    pub async fn open_dir(name: &str) -> std::result::Result<Opfs, String> {
        let navigator = get(&js_sys::global(), "navigator").map_err(|e| e.to_string())?;
        let storage = get(&navigator, "storage").map_err(|e| e.to_string())?;
        if storage.is_undefined() {
            return Err("this browser offers no navigator.storage".into());
        }
        let root = call_async(&storage, "getDirectory", &[])
            .await
            .map_err(|e| format!("the private file system (OPFS) is unavailable: {}", js_text(&e)))?;
        let dir = call_async(&root, "getDirectoryHandle", &[&name.into(), &object(&[("create", true.into())])])
            .await
            .map_err(|e| format!("could not open OPFS directory {name}: {}", js_text(&e)))?;
        Ok(Opfs { dir })
    }

    async fn file_handle(&self, name: &str, create: bool) -> std::result::Result<JsValue, JsValue> {
        call_async(&self.dir, "getFileHandle", &[&name.into(), &object(&[("create", create.into())])]).await
    }

    /// The file `name`, when it exists.
    pub async fn file(&self, name: &str) -> Option<File> {
        let handle = self.file_handle(name, false).await.ok()?;
        call_async(&handle, "getFile", &[]).await.ok()?.dyn_into::<File>().ok()
    }

    /// A read-only `FileSystemSyncAccessHandle` on file `name` (reads straight into wasm memory; see
    /// `BlobSource::with_sync_handle`), where the browser gives one: None in a page, in browsers without them, or
    /// while another context holds the file's lock.
    pub async fn sync_handle(&self, name: &str) -> Option<JsValue> {
        let handle = self.file_handle(name, false).await.ok()?;
        let options = object(&[("mode", "read-only".into())]);
        call_async(&handle, "createSyncAccessHandle", &[&options]).await.ok()
    }

    /// Replaces file `name` with `text`.
    pub async fn write_text(&self, name: &str, text: &str) -> std::result::Result<(), StoreError> {
        let handle = self.file_handle(name, true).await.map_err(|e| storage(name, &e))?;
        let w = call_async(&handle, "createWritable", &[]).await.map_err(|e| storage(name, &e))?;
        call_async(&w, "write", &[&text.into()]).await.map_err(|e| storage(name, &e))?;
        call_async(&w, "close", &[]).await.map_err(|e| storage(name, &e))?;
        Ok(())
    }

    pub async fn remove(&self, name: &str) {
        let _ = call_async(&self.dir, "removeEntry", &[&name.into()]).await;
    }

    pub async fn read_index(&self) -> Index {
        let Some(file) = self.file(INDEX).await else { return Index::default() };
        match wasm_bindgen_futures::JsFuture::from(file.text()).await.ok().and_then(|t| t.as_string()) {
            Some(text) => Index::from_json(text.as_bytes()),
            None => Index::default(),
        }
    }

    pub async fn write_index(&self, index: &Index) -> std::result::Result<(), StoreError> {
        self.write_text(INDEX, &index.to_json()).await
    }

    /// The complete copy of `url`, when there is one whose file has the size the index says.
    pub async fn lookup(&self, url: &str) -> Option<(Record, File)> {
        let index = self.read_index().await;
        let record = index.complete(url)?.clone();
        let file = self.file(&record.file).await?;
        (file.size() as u64 == record.bytes).then_some((record, file))
    }

    /// Downloads `url` whole into a file, reporting `progress(done, total)`. A failed or cancelled download leaves
    /// nothing behind.
    pub async fn download(
        &self,
        url: &str,
        cancelled: &CancelCheck,
        progress: &dyn Fn(u64, u64),
    ) -> std::result::Result<(Record, File), StoreError> {
        self.download_kind(url, Kind::Model, cancelled, progress).await
    }

    /// `download` of a file of `kind` (an adapter's size is capped).
    pub async fn download_kind(
        &self,
        url: &str,
        kind: Kind,
        cancelled: &CancelCheck,
        progress: &dyn Fn(u64, u64),
    ) -> std::result::Result<(Record, File), StoreError> {
        let download = Download::start_kind(url, kind).await?;
        let mut record = Record {
            url: url.to_string(),
            name: file_name(url),
            file: file_for(url),
            bytes: download.total,
            saved_at_ms: js_sys::Date::now(),
            complete: false,
            adapter: kind == Kind::Adapter,
        };
        // Recorded before the first byte, so a download the tab never finishes shows up as partial (and its
        // file can be found and deleted), never as a model.
        let mut index = self.read_index().await;
        index.put(record.clone());
        if let Err(e) = self.write_index(&index).await {
            download.cancel();
            return Err(e);
        }
        let result = self.write_body(&download, &record.file, cancelled, progress).await;
        match result {
            Ok(bytes) => {
                let file = match self.file(&record.file).await {
                    Some(f) if f.size() as u64 == bytes => f,
                    _ => {
                        self.forget(url).await;
                        return Err(StoreError::Storage(format!("{url}: the stored copy is not the downloaded size")));
                    }
                };
                record.bytes = bytes;
                record.saved_at_ms = js_sys::Date::now();
                record.complete = true;
                let mut index = self.read_index().await;
                index.put(record.clone());
                self.write_index(&index).await?;
                Ok((record, file))
            }
            Err(e) => {
                download.cancel();
                self.forget(url).await;
                Err(e)
            }
        }
    }

    /// Streams the body into file `name`; returns its length.
    async fn write_body(
        &self,
        download: &Download,
        name: &str,
        cancelled: &CancelCheck,
        progress: &dyn Fn(u64, u64),
    ) -> std::result::Result<u64, StoreError> {
        let handle = self.file_handle(name, true).await.map_err(|e| storage(name, &e))?;
        let w = call_async(&handle, "createWritable", &[]).await.map_err(|e| storage(name, &e))?;
        let mut done = 0u64;
        let mut throttle = Throttle::new();
        progress(0, download.total);
        let outcome: std::result::Result<(), StoreError> = async {
            loop {
                if cancelled() {
                    return Err(StoreError::Other(Error::Cancelled));
                }
                let Some(chunk) = download.next_chunk().await? else { break };
                done += chunk.length() as u64;
                call_async(&w, "write", &[&chunk]).await.map_err(|e| storage(name, &e))?;
                if throttle.due(done) {
                    progress(done, download.total);
                }
            }
            if download.total != 0 && done != download.total {
                return Err(StoreError::Other(io(format!(
                    "{}: the download ended after {done} of {} bytes",
                    download.url, download.total
                ))));
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                // Only now does the file get its contents.
                call_async(&w, "close", &[]).await.map_err(|e| storage(name, &e))?;
                progress(done, done);
                Ok(done)
            }
            Err(e) => {
                let _ = call_async(&w, "abort", &[]).await;
                Err(e)
            }
        }
    }

    /// Removes `url`'s file and record.
    pub async fn forget(&self, url: &str) {
        let mut index = self.read_index().await;
        let file = index.remove(url).map(|r| r.file).unwrap_or_else(|| file_for(url));
        self.remove(&file).await;
        let _ = self.write_index(&index).await;
    }

    pub async fn entries(&self) -> Vec<CacheEntry> {
        let index = self.read_index().await;
        let mut entries = Vec::new();
        for record in &index.records {
            let mut e = record.entry();
            // A complete record whose file went missing (cleared by the browser) is not a model any more.
            if e.complete && self.file(&record.file).await.is_none_or(|f| f.size() as u64 != record.bytes) {
                e.complete = false;
            }
            entries.push(e);
        }
        entries.sort_by(|a, b| b.saved_at_ms.total_cmp(&a.saved_at_ms));
        entries
    }

    /// Opens `url`'s stored copy as a source.
    pub fn source(record: &Record, file: File, cancelled: CancelCheck) -> BlobSource {
        BlobSource::new(file.into(), record.url.clone()).with_cancel(cancelled)
    }
}

/// `StoreError` as the load's error: storage trouble reads as an I/O error.
impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Storage(m) => io(m),
            StoreError::Other(e) => e,
        }
    }
}
