//! A model file behind a URL, read with HTTP Range requests: `read_at` fetches exactly the bytes asked for, so the
//! loader streams a model tensor by tensor and the whole file is never held in wasm memory.

use engine::source::ByteSource;
use engine::{Error, Result};
use js_sys::Uint8Array;
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{RequestInit, Response, WorkerGlobalScope};

/// Tells a source to stop: every later read fails with `Error::Cancelled`.
pub type CancelCheck = Rc<dyn Fn() -> bool>;

pub struct HttpSource {
    url: String,
    len: u64,
    scope: WorkerGlobalScope,
    cancelled: CancelCheck,
}

fn js_text(e: JsValue) -> String {
    crate::js::js_text(&e)
}

fn io(message: String) -> Error {
    crate::js::io(message)
}

impl HttpSource {
    /// Learns the file's length (HEAD, or a one-byte Range read when HEAD gives none) and checks that the server
    /// honours Range requests.
    pub async fn open(url: &str, cancelled: CancelCheck) -> Result<Self> {
        let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
        let mut source = HttpSource { url: url.to_string(), len: 0, scope, cancelled };
        let probe = source.fetch(Some("bytes=0-0")).await?;
        let status = probe.status();
        if status != 206 {
            return Err(io(format!(
                "{url}: the server answered a Range request with HTTP {status}{}",
                if status == 200 { " (it does not support Range requests, which streaming a model needs)" } else { "" }
            )));
        }
        let range = probe.headers().get("content-range").ok().flatten().unwrap_or_default();
        source.len = range
            .rsplit('/')
            .next()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .ok_or_else(|| io(format!("{url}: no file length in Content-Range `{range}`")))?;
        Ok(source)
    }

    async fn fetch(&self, range: Option<&str>) -> Result<Response> {
        if (self.cancelled)() {
            return Err(Error::Cancelled);
        }
        let init = RequestInit::new();
        init.set_method("GET");
        let headers = web_sys::Headers::new().map_err(|e| io(js_text(e)))?;
        if let Some(r) = range {
            headers.set("Range", r).map_err(|e| io(js_text(e)))?;
        }
        init.set_headers(&headers);
        let promise = self.scope.fetch_with_str_and_init(&self.url, &init);
        let resp = JsFuture::from(promise).await.map_err(|e| io(format!("{}: {}", self.url, js_text(e))))?;
        let resp: Response = resp.dyn_into().map_err(|_| io(format!("{}: fetch gave no Response", self.url)))?;
        if !resp.ok() {
            return Err(io(format!("{}: HTTP {} {}", self.url, resp.status(), resp.status_text())));
        }
        Ok(resp)
    }
}

impl ByteSource for HttpSource {
    fn len(&self) -> u64 {
        self.len
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset.checked_add(len as u64).filter(|&e| e <= self.len).ok_or_else(|| {
            Error::InvalidArgument(format!("read of {len} bytes at {offset} is past the end of {}", self.url))
        })?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let resp = self.fetch(Some(&format!("bytes={offset}-{}", end - 1))).await?;
        if resp.status() != 206 {
            return Err(io(format!("{}: expected 206 Partial Content, got HTTP {}", self.url, resp.status())));
        }
        let buf = resp.array_buffer().map_err(|e| io(js_text(e)))?;
        let buf = JsFuture::from(buf).await.map_err(|e| io(format!("{}: {}", self.url, js_text(e))))?;
        let bytes = Uint8Array::new(&buf);
        if bytes.length() as usize != len {
            return Err(io(format!("{}: asked for {len} bytes at {offset}, got {}", self.url, bytes.length())));
        }
        if (self.cancelled)() {
            return Err(Error::Cancelled);
        }
        Ok(bytes.to_vec())
    }

    fn name(&self) -> String {
        self.url.clone()
    }
}
