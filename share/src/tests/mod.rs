//! Links here are packed by hand from literal JSON, not by `encode`, so the tests check the format itself and can
//! build hostile links `encode` would refuse to make.

mod format;
mod rejections;
mod roundtrip;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

fn pack(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(miniz_oxide::deflate::compress_to_vec(bytes, 6))
}

/// A v1 link holding `json` as is.
fn link(json: &serde_json::Value) -> String {
    format!("v1.{}", pack(json.to_string().as_bytes()))
}

/// The smallest valid state's JSON with `patch`'s top-level fields added or replaced.
fn link_with(patch: serde_json::Value) -> String {
    let mut json = serde_json::json!({ "version": 1 });
    for (k, v) in patch.as_object().expect("patch is an object") {
        json[k] = v.clone();
    }
    link(&json)
}
