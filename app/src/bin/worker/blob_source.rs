//! A `Blob` as a `ByteSource`: a `File` the user picked or dropped, an OPFS file, or a Cache Storage response's
//! body. `read_at` slices the blob and reads only that slice (`Blob.slice(a, b).arrayBuffer()`), so the file is
//! never whole in wasm memory; the browser keeps large blobs on disk.

use crate::http_source::CancelCheck;
use crate::js::{io, js_text};
use engine::source::ByteSource;
use engine::{Error, Result};
use js_sys::Uint8Array;
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

pub struct BlobSource {
    blob: Blob,
    name: String,
    len: u64,
    cancelled: Option<CancelCheck>,
}

impl BlobSource {
    pub fn new(blob: Blob, name: impl Into<String>) -> Self {
        let len = blob.size() as u64;
        BlobSource { blob, name: name.into(), len, cancelled: None }
    }

    /// Every later read fails with `Error::Cancelled` once `cancelled` says so.
    pub fn with_cancel(mut self, cancelled: CancelCheck) -> Self {
        self.cancelled = Some(cancelled);
        self
    }

    /// The whole blob, for the small JSON files of a safetensors folder.
    pub async fn read_all(&self) -> Result<Vec<u8>> {
        self.read_at(0, self.len as usize).await
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.as_ref().is_some_and(|c| c())
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
        let slice = self
            .blob
            .slice_with_f64_and_f64(offset as f64, end as f64)
            .map_err(|e| io(format!("{}: {}", self.name, js_text(&e))))?;
        // A file changed or removed since it was opened fails here (NotReadableError), as an error, not garbage.
        let buf = JsFuture::from(slice.array_buffer())
            .await
            .map_err(|e| io(format!("{}: could not read it: {}", self.name, js_text(&e))))?;
        let bytes = Uint8Array::new(&buf);
        if bytes.length() as usize != len {
            return Err(io(format!("{}: asked for {len} bytes at {offset}, got {}", self.name, bytes.length())));
        }
        if self.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(bytes.to_vec())
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}
