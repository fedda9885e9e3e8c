//! A `Blob` as a `ByteSource`: a `File` the user picked or dropped, an OPFS file, or a Cache Storage response's
//! body. `read_at` slices the blob and reads only that slice (`Blob.slice(a, b).arrayBuffer()`), so the file is
//! never whole in wasm memory; the browser keeps large blobs on disk.
//!
//! Each read is a round trip to the browser's blob storage, and a model's load reads tensor after tensor (~270 for
//! SmolLM2-135M, most of them small): one round trip each made half of a cached load's time. So a small read takes
//! a window of [`READ_AHEAD`] bytes from there on, and the reads after it that fall inside are served from memory.
//! An OPFS file can do better still: with a synchronous access handle (dedicated workers only) a read is one call
//! straight into wasm memory ([`BlobSource::with_sync_handle`]). The handle locks the file, so the host releases it
//! once the weights are in ([`BlobSource::release`]); later reads, if any, go through the blob again.

use crate::http_source::CancelCheck;
use crate::js::{call, io, js_text, object};
use engine::source::ByteSource;
use engine::{Error, Result};
use js_sys::Uint8Array;
use std::cell::RefCell;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

/// Bytes read from a small read's offset on: a few tensors of a small model's layer, a little of a large one's.
pub const READ_AHEAD: usize = 8 << 20;

pub struct BlobSource {
    blob: Blob,
    name: String,
    len: u64,
    cancelled: Option<CancelCheck>,
    /// The last window read ahead: its offset in the blob and its bytes.
    window: RefCell<Option<(u64, Vec<u8>)>>,
    /// An OPFS `FileSystemSyncAccessHandle` on the same file, while the host holds it.
    sync: RefCell<Option<JsValue>>,
}

impl BlobSource {
    pub fn new(blob: Blob, name: impl Into<String>) -> Self {
        let len = blob.size() as u64;
        BlobSource {
            blob,
            name: name.into(),
            len,
            cancelled: None,
            window: RefCell::new(None),
            sync: RefCell::new(None),
        }
    }

    /// Every later read fails with `Error::Cancelled` once `cancelled` says so.
    pub fn with_cancel(mut self, cancelled: CancelCheck) -> Self {
        self.cancelled = Some(cancelled);
        self
    }

    /// Reads through `handle`, a `FileSystemSyncAccessHandle` on the blob's OPFS file, until [`Self::release`].
    pub fn with_sync_handle(self, handle: JsValue) -> Self {
        *self.sync.borrow_mut() = Some(handle);
        self
    }

    /// Closes the synchronous access handle, if any, so that the file is no longer locked.
    pub fn release(&self) {
        if let Some(handle) = self.sync.borrow_mut().take() {
            let _ = call(&handle, "close", &[]);
        }
    }

    /// `len` bytes at `offset` through the synchronous handle, None when there is none or it failed (the blob then
    /// reads them).
    fn read_sync(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let sync = self.sync.borrow();
        let handle = sync.as_ref()?;
        let mut bytes = vec![0u8; len];
        let at = object(&[("at", JsValue::from_f64(offset as f64))]);
        // SAFETY: the view is used only by this call, and nothing allocates in wasm memory (which could grow it and
        // detach the view) between its creation and the call's return.
        let view = unsafe { Uint8Array::view_mut_raw(bytes.as_mut_ptr(), len) };
        let read = call(handle, "read", &[&view, &at]).ok()?.as_f64()?;
        (read as usize == len).then_some(bytes)
    }

    pub async fn read_all(&self) -> Result<Vec<u8>> {
        self.read_at(0, self.len as usize).await
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.as_ref().is_some_and(|c| c())
    }

    /// `len` bytes at `offset` from the last window, when it holds them.
    fn from_window(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let window = self.window.borrow();
        let (start, bytes) = window.as_ref()?;
        let from = usize::try_from(offset.checked_sub(*start)?).ok()?;
        bytes.get(from..from.checked_add(len)?).map(<[u8]>::to_vec)
    }

    /// Bytes `offset..end` of the blob (inside it), in one read.
    async fn read_range(&self, offset: u64, end: u64) -> Result<Vec<u8>> {
        let slice = self
            .blob
            .slice_with_f64_and_f64(offset as f64, end as f64)
            .map_err(|e| io(format!("{}: {}", self.name, js_text(&e))))?;
        // A file changed or removed since it was opened fails here (NotReadableError), as an error, not garbage.
        let buf = JsFuture::from(slice.array_buffer())
            .await
            .map_err(|e| io(format!("{}: could not read it: {}", self.name, js_text(&e))))?;
        let bytes = Uint8Array::new(&buf);
        let want = end - offset;
        if bytes.length() as u64 != want {
            return Err(io(format!("{}: asked for {want} bytes at {offset}, got {}", self.name, bytes.length())));
        }
        Ok(bytes.to_vec())
    }
}

impl ByteSource for BlobSource {
    fn len(&self) -> u64 {
        self.len
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset.checked_add(len as u64).filter(|&e| e <= self.len).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "read of {len} bytes at {offset} is past the end of {} ({} bytes)",
                self.name, self.len
            ))
        })?;
        if self.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let bytes = match self.read_sync(offset, len).or_else(|| self.from_window(offset, len)) {
            Some(bytes) => bytes,
            None if len < READ_AHEAD => {
                let window_end = (offset + READ_AHEAD as u64).min(self.len);
                let window = self.read_range(offset, window_end).await?;
                let bytes = window[..len].to_vec();
                *self.window.borrow_mut() = Some((offset, window));
                bytes
            }
            None => self.read_range(offset, end).await?,
        };
        if self.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(bytes)
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

impl Drop for BlobSource {
    fn drop(&mut self) {
        self.release();
    }
}
