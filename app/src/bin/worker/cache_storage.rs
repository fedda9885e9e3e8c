//! Downloaded models in Cache Storage (`caches`), for browsers or contexts without OPFS. A response is put into the
//! cache only once its whole body has arrived, so the cache never holds a partial model; its body is then read back
//! as a disk-backed `Blob`, at offsets. The cache is its own index: the stored response carries the size and the
//! time it was saved in headers.

use crate::blob_source::BlobSource;
use crate::download::{Download, Kind, Throttle};
use crate::http_source::CancelCheck;
use crate::js::{call_async, file_name, get, io, js_text};
use crate::opfs::StoreError;
use engine::protocol::CacheEntry;
use engine::Error;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Blob, Response};

const CACHE: &str = "aviary-models";
const SAVED_AT: &str = "x-aviary-saved-at";
/// Present (any value) on an adapter's file.
const ADAPTER: &str = "x-aviary-adapter";

pub struct CacheStore {
    cache: JsValue,
}

impl CacheStore {
    pub async fn open() -> std::result::Result<CacheStore, String> {
        let caches = get(&js_sys::global(), "caches").map_err(|e| e.to_string())?;
        if caches.is_undefined() || caches.is_null() {
            return Err("this context has no Cache Storage".into());
        }
        let cache = call_async(&caches, "open", &[&CACHE.into()])
            .await
            .map_err(|e| format!("Cache Storage is unavailable: {}", js_text(&e)))?;
        Ok(CacheStore { cache })
    }

    async fn matching(&self, url: &str) -> Option<Response> {
        call_async(&self.cache, "match", &[&url.into()]).await.ok()?.dyn_into::<Response>().ok()
    }

    /// The stored body of `url`, as a blob.
    pub async fn lookup(&self, url: &str) -> Option<Blob> {
        let resp = self.matching(url).await?;
        let blob = call_async(&resp, "blob", &[]).await.ok()?.dyn_into::<Blob>().ok()?;
        Some(blob)
    }

    /// Downloads `url` whole, then stores it.
    pub async fn download(
        &self,
        url: &str,
        cancelled: &CancelCheck,
        progress: &dyn Fn(u64, u64),
    ) -> std::result::Result<Blob, StoreError> {
        self.download_kind(url, Kind::Model, cancelled, progress).await
    }

    /// `download` of a file of `kind` (an adapter's size is capped).
    pub async fn download_kind(
        &self,
        url: &str,
        kind: Kind,
        cancelled: &CancelCheck,
        progress: &dyn Fn(u64, u64),
    ) -> std::result::Result<Blob, StoreError> {
        let download = Download::start_kind(url, kind).await?;
        // The chunks gather in a JS Blob (which the browser may keep on disk), never in wasm memory.
        let parts = js_sys::Array::new();
        let mut done = 0u64;
        let mut throttle = Throttle::new();
        progress(0, download.total);
        loop {
            if cancelled() {
                download.cancel();
                return Err(StoreError::Other(Error::Cancelled));
            }
            let Some(chunk) = download.next_chunk().await? else { break };
            done += chunk.length() as u64;
            parts.push(&chunk);
            if throttle.due(done) {
                progress(done, download.total);
            }
        }
        if download.total != 0 && done != download.total {
            return Err(StoreError::Other(io(format!("{url}: the download ended after {done} of {} bytes", download.total))));
        }
        let body = Blob::new_with_u8_array_sequence(&parts).map_err(|e| StoreError::Storage(js_text(&e)))?;
        let headers = web_sys::Headers::new().map_err(|e| StoreError::Storage(js_text(&e)))?;
        let _ = headers.set("content-length", &done.to_string());
        let _ = headers.set("content-type", "application/octet-stream");
        let _ = headers.set(SAVED_AT, &js_sys::Date::now().to_string());
        if kind == Kind::Adapter {
            let _ = headers.set(ADAPTER, "1");
        }
        let init = web_sys::ResponseInit::new();
        init.set_headers(&headers);
        let resp = Response::new_with_opt_blob_and_init(Some(&body), &init).map_err(|e| StoreError::Storage(js_text(&e)))?;
        call_async(&self.cache, "put", &[&url.into(), &resp])
            .await
            .map_err(|e| StoreError::Storage(format!("storing {url} in Cache Storage: {}", js_text(&e))))?;
        progress(done, done);
        self.lookup(url).await.ok_or_else(|| StoreError::Storage(format!("{url}: Cache Storage did not keep it")))
    }

    pub async fn forget(&self, url: &str) {
        let _ = call_async(&self.cache, "delete", &[&url.into()]).await;
    }

    pub async fn entries(&self) -> Vec<CacheEntry> {
        let Ok(keys) = call_async(&self.cache, "keys", &[]).await else { return Vec::new() };
        let mut entries = Vec::new();
        for request in js_sys::Array::from(&keys).iter() {
            let Some(url) = get(&request, "url").ok().and_then(|u| u.as_string()) else { continue };
            let Some(resp) = self.matching(&url).await else { continue };
            let header = |k: &str| resp.headers().get(k).ok().flatten();
            entries.push(CacheEntry {
                name: file_name(&url),
                bytes: header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0),
                saved_at_ms: header(SAVED_AT).and_then(|v| v.parse().ok()).unwrap_or(0.0),
                complete: true,
                adapter: header(ADAPTER).is_some(),
                url,
            });
        }
        entries.sort_by(|a, b| b.saved_at_ms.total_cmp(&a.saved_at_ms));
        entries
    }

    pub fn source(url: &str, blob: Blob, cancelled: CancelCheck) -> BlobSource {
        BlobSource::new(blob, url).with_cancel(cancelled)
    }
}

