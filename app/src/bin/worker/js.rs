//! Small helpers for calling browser APIs by name (OPFS, Cache Storage, streams) through `js_sys::Reflect`: the same
//! code then runs in the worker and on a page (the wasm tests), and needs none of web-sys's unstable bindings.

use engine::{Error, Result};
use js_sys::{Array, Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// An I/O error with a message for people.
pub fn io(message: impl Into<String>) -> Error {
    Error::Io(std::io::Error::other(message.into()))
}

/// A JS exception as text: "NotFoundError: A requested file or directory could not be found…".
pub fn js_text(e: &JsValue) -> String {
    if let Some(s) = e.as_string() {
        return s;
    }
    let name = Reflect::get(e, &"name".into()).ok().and_then(|v| v.as_string());
    let message = Reflect::get(e, &"message".into()).ok().and_then(|v| v.as_string());
    match (name, message) {
        (Some(n), Some(m)) if !m.is_empty() => format!("{n}: {m}"),
        (Some(n), _) => n,
        (None, Some(m)) => m,
        _ => format!("{e:?}"),
    }
}

/// The exception's `name` (e.g. "QuotaExceededError"), when it has one.
pub fn js_error_name(e: &JsValue) -> Option<String> {
    Reflect::get(e, &"name".into()).ok().and_then(|v| v.as_string())
}

pub fn get(obj: &JsValue, key: &str) -> Result<JsValue> {
    Reflect::get(obj, &key.into()).map_err(|e| io(format!("reading `{key}`: {}", js_text(&e))))
}

/// `obj[method](...args)`.
pub fn call(obj: &JsValue, method: &str, args: &[&JsValue]) -> std::result::Result<JsValue, JsValue> {
    let f = Reflect::get(obj, &method.into())?;
    let f: Function = f.dyn_into().map_err(|_| JsValue::from_str(&format!("`{method}` is not a function here")))?;
    let list = Array::new();
    for a in args {
        list.push(a);
    }
    f.apply(obj, &list)
}

/// `await obj[method](...args)`; the error keeps the JS exception (its `name` tells quota from not-found).
pub async fn call_async(obj: &JsValue, method: &str, args: &[&JsValue]) -> std::result::Result<JsValue, JsValue> {
    let v = call(obj, method, args)?;
    match v.dyn_into::<Promise>() {
        Ok(p) => JsFuture::from(p).await,
        Err(v) => Ok(v),
    }
}

/// A plain object `{k: v, …}`.
pub fn object(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        let _ = Reflect::set(&o, &(*k).into(), v);
    }
    o.into()
}

/// `url` made absolute against the page's (or worker's) location, so one model has one key whoever names it.
pub fn absolute_url(url: &str) -> String {
    let base = get(&js_sys::global(), "location").and_then(|l| get(&l, "href")).ok().and_then(|h| h.as_string());
    match base {
        Some(base) => web_sys::Url::new_with_base(url, &base).map(|u| u.href()).unwrap_or_else(|_| url.to_string()),
        None => url.to_string(),
    }
}

/// The last part of a URL's path ("SmolLM2-135M-Instruct.Q4_1.gguf").
pub fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or(path);
    let name = js_sys::decode_uri_component(name).map(String::from).unwrap_or_else(|_| name.to_string());
    if name.is_empty() { url.to_string() } else { name }
}
